package main

import "syscall"

// sysProcAttr puts a child in its own process group and has the kernel send
// it SIGTERM if this runner dies without stopping it (kill -9), so that no
// orphan keeps the ports.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
