// Package docblock reads the fenced code blocks of Tollgate's Markdown docs
// (README.md, docs/*.md), for the tests that hold the examples an operator
// copies from them (rules files, catalogs, alert rules, shell commands) to
// what the code accepts.
package docblock

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A Block is one fenced code block.
type Block struct {
	File string // the doc's path relative to the repository root, e.g. docs/operations.md
	Line int    // the line of the opening fence, from 1
	Lang string // the fence's info string ("yaml", "sh"; "" when none)
	Text string // the lines between the fences, less the fence's indentation
}

// Where is "file:line", for messages.
func (b Block) Where() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }

// A Doc is one Markdown doc.
type Doc struct {
	Name string // its path relative to the repository root, e.g. docs/operations.md
	Text string
}

// Files returns README.md and docs/*.md under the repository root, in
// that order, but those whose base name is in skip.
func Files(root string, skip ...string) ([]Doc, error) {
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		return nil, err
	}
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	var out []Doc
	for _, f := range files {
		if slices.Contains(skip, filepath.Base(f)) {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		name, err := filepath.Rel(root, f)
		if err != nil {
			return nil, err
		}
		out = append(out, Doc{Name: filepath.ToSlash(name), Text: string(b)})
	}
	return out, nil
}

// Docs returns the blocks of README.md and docs/*.md under the repository
// root, in file order.
func Docs(root string) ([]Block, error) {
	docs, err := Files(root)
	if err != nil {
		return nil, err
	}
	var out []Block
	for _, d := range docs {
		blocks, err := Parse(d.Name, d.Text)
		if err != nil {
			return nil, err
		}
		out = append(out, blocks...)
	}
	return out, nil
}

// Parse returns the blocks of one Markdown text: fences of three or more
// backquotes, indented (a block inside a list item) or not.
func Parse(name, text string) ([]Block, error) {
	var out []Block
	var cur *Block
	var indent, fence string
	var body []string
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if cur == nil {
			if strings.HasPrefix(trimmed, "```") {
				indent = line[:len(line)-len(trimmed)]
				fence = trimmed[:len(trimmed)-len(strings.TrimLeft(trimmed, "`"))]
				cur = &Block{File: name, Line: i + 1, Lang: strings.TrimSpace(trimmed[len(fence):])}
				body = nil
			}
			continue
		}
		if strings.HasPrefix(trimmed, fence) && strings.TrimSpace(trimmed) == strings.Repeat("`", len(strings.TrimSpace(trimmed))) {
			cur.Text = strings.Join(body, "\n") + "\n"
			out = append(out, *cur)
			cur = nil
			continue
		}
		body = append(body, strings.TrimPrefix(line, indent))
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: a code block is never closed", name, cur.Line)
	}
	return out, nil
}

// Lang returns the blocks of language lang.
func Lang(blocks []Block, lang string) []Block {
	var out []Block
	for _, b := range blocks {
		if b.Lang == lang {
			out = append(out, b)
		}
	}
	return out
}
