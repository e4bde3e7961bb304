package xdp

import "github.com/cilium/ebpf/link"

func (m Mode) flags() link.XDPAttachFlags {
	if m == Generic {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}
