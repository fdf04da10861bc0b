package apikeys

// QSweep is the statement of Store.Sweep, for the test that explains it.
const QSweep = qSweep
