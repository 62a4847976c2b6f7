//go:build tools

// Package tools pins the CoreDNS the test cluster runs as its cluster DNS, so Service
// names resolve inside pods as on any real cluster. CoreDNS is a plain Go module.
package tools

import _ "github.com/coredns/coredns"
