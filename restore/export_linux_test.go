package restore

// SetBootID makes the spool see id as the kernel's boot id, as after a reboot, until the returned
// function restores it.
func SetBootID(id [16]byte) (restore func()) {
	saved := bootID
	bootID = func() [16]byte { return id }
	return func() { bootID = saved }
}
