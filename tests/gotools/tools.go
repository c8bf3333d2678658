//go:build tools

// Package gotools pins the third-party Go programs the tests and benchmarks run
// against: Headscale (control server), Tailscale's tailscaled, tailscale and
// derper, and current wireguard-go. Nothing here is shipped; tests/gotools/build
// builds them into ~/.cache/meshbridge/gotools/<version>/.
package gotools

import (
	_ "github.com/juanfont/headscale/cmd/headscale"
	_ "golang.zx2c4.com/wireguard"
	_ "tailscale.com/cmd/derper"
	_ "tailscale.com/cmd/tailscale"
	_ "tailscale.com/cmd/tailscaled"
)
