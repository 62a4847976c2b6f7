//go:build tools

// Package tools pins the Kubernetes commands the test rig builds: the wrapper
// module exists only because k8s.io/kubernetes cannot be `go install`ed
// (its go.mod replaces staging modules with local paths).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
