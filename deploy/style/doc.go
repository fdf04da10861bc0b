// Package style checks, over the services' source, the rules of
// STYLE.md that the compiler does not: that authproxy and coreapi hold no
// package-level mutable state.
package style
