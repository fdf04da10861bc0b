package auth

// QGiveBackTry is the statement that gives an mfa_token's try back, for the
// tests that park it (TestRefusedSecondStepTakesNoTry): matched by its own
// text, the test follows it when it is reworded.
const QGiveBackTry = qGiveBackTry
