//go:build tools

// Package tools pins the helm CLI the test rig builds for chart checks.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
