package snapshotter

// testHook is called with the name of each durable step of Prepare, Commit
// and Remove. Tests replace it to kill the process at that step and check
// what a restart recovers; in the daemon it does nothing.
var testHook = func(step string) {}
