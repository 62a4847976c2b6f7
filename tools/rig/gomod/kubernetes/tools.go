//go:build tools

// Package tools pins the Kubernetes commands the test rig builds: the wrapper
// module exists only because k8s.io/kubernetes cannot be `go install`ed
// (its go.mod replaces staging modules with local paths). The control plane
// (kube-apiserver, kubectl) serves every test; the node and controller
// commands make the real single-node cluster that runs the project's pods.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
