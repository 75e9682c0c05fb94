package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/internal/badinput"
	"github.com/spf13/cobra"
)

func newDataCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Make training data: code instructions from Python sources, generated CL tasks",
		Long: `data makes data files migu trains on, from what every machine has:
code-instructions turns documented Python functions into instruction records,
tasks writes small generated classification tasks laid out like the
continual-learning benchmark.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newCodeInstructionsCmd(), newTasksCmd())
	return cmd
}

func newCodeInstructionsCmd() *cobra.Command {
	var o data.CodeInstructionOptions
	var from, out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "code-instructions --from DIR --out FILE.jsonl [--limit N]",
		Short: "Pair each documented Python function's docstring with its body",
		Long: `code-instructions walks a folder of Python sources (files in path order,
functions in source order) and writes one JSON line per documented function:

  instruction  the docstring, cleaned as inspect.cleandoc cleans it
  input        the signature: decorators and the def line(s)
  output       the body without the docstring, indented as in a def at column 0

With the Alpaca template (migu train's default) the model reads the docstring,
then the def line, and writes the body. --format completion writes
{"prompt": signature + docstring as written, "completion": body} instead, the
shape of a HumanEval problem. Each record also names its "source" (path:line).

Skipped: private functions (_name, dunders included) unless --keep-private;
test folders (test, tests, idle_test), test files and test* functions unless
--keep-tests; bodies outside --min-body-lines..--max-body-lines non-blank
lines; docstrings shorter than --min-doc-chars; a docstring and body seen
before; files that are not UTF-8. --limit keeps N records spread evenly over
the list. The output is written atomically.

The Python standard library is on every machine with Python:
  python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])'`,
		Example: `  migu data code-instructions --from "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" --out code.jsonl --limit 2000
  migu data code-instructions --from ./src --out code.jsonl --format completion --keep-private`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || out == "" {
				return badinput.Errorf("code-instructions needs --from DIR and --out FILE.jsonl")
			}
			if o.MinBodyLines < 0 {
				return badinput.Errorf("--min-body-lines %d is negative", o.MinBodyLines)
			}
			recs, st, err := data.CodeInstructions(from, o)
			if err != nil {
				return err
			}
			if err := data.WriteCodeInstructions(out, recs); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				raw, err := json.MarshalIndent(struct {
					Out   string                    `json:"out"`
					Stats data.CodeInstructionStats `json:"stats"`
				}{out, st}, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(w, string(raw))
				return err
			}
			fmt.Fprintf(w, "%d Python files (%d skipped), %d functions, %d documented\n", st.Files, st.SkippedFiles, st.Functions, st.Documented)
			fmt.Fprintf(w, "skipped: %d tests, %d private, %d too short, %d too long, %d duplicates\n", st.Tests, st.Private, st.TooShort, st.TooLong, st.Duplicates)
			fmt.Fprintf(w, "wrote %d of %d records to %s\n", st.Written, st.Kept, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "folder of Python sources (e.g. the standard library, see above)")
	f.StringVar(&out, "out", "", "JSON lines file to write")
	f.StringVar(&o.Format, "format", data.CodeFormatInstruction, "record format: instruction (instruction/input/output) or completion (prompt/completion)")
	f.IntVar(&o.Limit, "limit", 0, "keep at most N records, spread evenly over the list (0: all)")
	f.IntVar(&o.MinBodyLines, "min-body-lines", 2, "skip bodies with fewer non-blank lines")
	f.IntVar(&o.MaxBodyLines, "max-body-lines", 40, "skip bodies with more non-blank lines (-1: no bound)")
	f.IntVar(&o.MinDocChars, "min-doc-chars", 10, "skip docstrings shorter than this")
	f.BoolVar(&o.KeepTests, "keep-tests", false, "keep test folders, test files and test* functions")
	f.BoolVar(&o.KeepPrivate, "keep-private", false, "keep functions whose names start with _")
	f.BoolVar(&asJSON, "json", false, "print the counts as JSON")
	return cmd
}

func newTasksCmd() *cobra.Command {
	var o data.SyntheticOptions
	var out string
	var names []string
	cmd := &cobra.Command{
		Use:   "tasks --out DIR [--tasks a,b,c] [--train N --test N --seed N]",
		Short: "Write generated classification tasks laid out like the CL benchmark",
		Long: `tasks writes small classification tasks generated from --seed, each as
DIR/TYPE/NAME/train.json, test.json (JSON arrays of {"sentence", "label"})
and labels.json, the layout of the continual-learning benchmark, so that
sequence files and migu continual treat them like benchmark tasks. A tiny,
briefly pre-trained model learns the first three in about a hundred steps
each (the demo's sequence); the last two take longer. The tasks:

` + taskList(),
		Example: `  migu data tasks --out runs/tasks
  migu data tasks --out runs/tasks --tasks wordsent,majority --train 400 --test 100 --seed 3`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return badinput.Errorf("tasks needs --out DIR")
			}
			files, err := data.WriteSyntheticTasks(out, names, o)
			if err != nil {
				return err
			}
			for _, f := range files {
				fmt.Fprintf(cmd.OutOrStdout(), "%-10s %s\n", f.Task.Name, f.Dir)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "folder to write the tasks under")
	f.StringSliceVar(&names, "tasks", nil, "tasks to write (default: all)")
	f.IntVar(&o.Train, "train", 200, "train examples per task")
	f.IntVar(&o.Test, "test", 100, "test examples per task")
	f.Uint64Var(&o.Seed, "seed", 0, "random seed")
	return cmd
}

// taskList describes the generated tasks for the help text.
func taskList() string {
	var b strings.Builder
	for _, t := range data.SyntheticTasks() {
		fmt.Fprintf(&b, "  %s\n", t)
	}
	return b.String()
}
