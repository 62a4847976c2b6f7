//go:build tools

// Package tools pins the etcd server the test rig builds (Debian's etcd is too old
// for Kubernetes 1.34; envtest pairs 1.34 with etcd 3.6).
package tools

import _ "go.etcd.io/etcd/server/v3"
