package erofs

import "runtime"

// runtimeMem samples the bytes allocated so far (memory bounds in tests).
type runtimeMem struct{ total uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.total = s.TotalAlloc
}
