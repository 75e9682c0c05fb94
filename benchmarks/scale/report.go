package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/migu-ml/migu/internal/atomicfile"
)

// target is the bound on a migu result's peak RSS in bytes (0:
// none) and how the bound reads.
func target(r *result, info *shapeInfo) (float64, string) {
	if r.Side != "migu" {
		return 0, ""
	}
	switch {
	case r.Case == "export" && r.Shape == "1b":
		return 1.5e9, "≤ 1.5 GB"
	case r.Case == "export" && r.Shape == "7b":
		return 2e9, "≤ 2 GB"
	case r.Case == "lora" && r.Shape == "1b" && info != nil && info.FrozenBytes > 0:
		b := 1.25*float64(info.FrozenBytes) + 1.5e9
		return b, fmt.Sprintf("≤ 1.25 × %.2f GB frozen + 1.5 GB = %.2f GB", float64(info.FrozenBytes)/1e9, b/1e9)
	case r.Case == "lora" && r.Shape == "7b":
		return 20e9, "≤ 20 GB"
	case r.Case == "full" && info != nil:
		return 0, fmt.Sprintf("floor 16 B/param = %.1f GB", 16*float64(info.Params)/1e9)
	}
	return 0, ""
}

// verdict compares a result with its target: "met", "over by N %", the
// ratio to the 16 bytes/parameter floor of full fine-tuning, or "—".
func verdict(r *result, info *shapeInfo) string {
	if !r.ok() {
		return "—"
	}
	rss := r.PeakRSSMB * mib
	limit, _ := target(r, info)
	switch {
	case limit > 0 && rss <= limit:
		return "met"
	case limit > 0:
		return fmt.Sprintf("over by %.0f %%", (rss/limit-1)*100)
	case r.Side == "migu" && r.Case == "full" && info != nil && info.Params > 0:
		return fmt.Sprintf("%.2f × floor", rss/(16*float64(info.Params)))
	}
	return "—"
}

// writeReport writes RESULTS.json and the markdown table beside it.
func writeReport(out string, rep *report) error {
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	jsonPath := strings.TrimSuffix(out, ".md") + ".json"
	if err := atomicfile.WriteFile(jsonPath, append(raw, '\n')); err != nil {
		return err
	}
	return atomicfile.WriteFile(out, []byte(markdown(rep, filepath.Base(jsonPath))))
}

func markdown(rep *report, jsonName string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# migu at scale: memory and speed on TinyLlama-1.1B's and Llama-2-7B's shapes\n\n")
	fmt.Fprintf(&b, "Written by `%s` on %s (%.1f min). Machine: %s.\n\n", strings.TrimSpace(rep.Command), rep.Date, rep.Minutes, rep.Machine)
	if rep.Partial {
		fmt.Fprintf(&b, "**Partial:** the run was still going (or was stopped) when this was written.\n\n")
	}
	fmt.Fprintf(&b, "Checkpoints: `migu init --arch llama --preset 1b|7b --dtype bf16` (random weights, the real shapes). migu exports them with `--dtype %s` and trains through the `migu` CLI; PyTorch (%s) loads the same folder with transformers in bfloat16 for LoRA through PEFT (q_proj, v_proj, r 8, α 32, float32 adapters) and in float32 for full fine-tuning, on random token batches of the same shape. AdamW lr 1e-4 on both sides, MIGU off, %d threads. Every row is one process; peak RSS is the kernel's count for it (ru_maxrss, VmHWM) in GB of 10⁹ bytes. Seconds per step are the median of the steps after the first (warm-up).\n\n",
		rep.ExportDType, rep.TorchConfig.Name, rep.Threads)
	if rep.TorchConfig.Note != "" {
		fmt.Fprintf(&b, "PyTorch configuration: %s.\n\n", rep.TorchConfig.Note)
	}
	fmt.Fprintf(&b, "| shape | parameters | init file (dtype) | exported weights |\n|---|---|---|---|\n")
	for _, name := range shapeNames {
		info := rep.Shapes[name]
		if info == nil {
			continue
		}
		frozen := "—"
		if info.FrozenBytes > 0 {
			frozen = fmt.Sprintf("%.2f GB", float64(info.FrozenBytes)/1e9)
		}
		fmt.Fprintf(&b, "| %s | %d | %.2f GB (%s) | %s |\n", name, info.Params, float64(info.HFBytes)/1e9, info.DType, frozen)
	}
	fmt.Fprintf(&b, "\n| shape | case | side | batch × seq | recompute | wall s | first step s | s/step | tokens/s | peak RSS GB | target | verdict |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Results {
		info := rep.Shapes[r.Shape]
		_, tgt := target(r, info)
		if !r.ok() {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | | | | | %s | — |\n", r.Shape, r.Case, r.Side, batchText(r), or(r.Recompute, "—"), r.Note, or(tgt, "—"))
			continue
		}
		step, first, tps := "—", "—", "—"
		if len(r.StepS) > 0 {
			step, first, tps = fmt.Sprintf("%.2f", r.stepS()), fmt.Sprintf("%.2f", r.StepS[0]), fmt.Sprintf("%.0f", r.tokensPerS())
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %.2f | %s | %s |\n", r.Shape, r.Case, r.Side, batchText(r), or(r.Recompute, "—"),
			r.WallS, first, step, tps, r.PeakRSSMB*mib/1e9, or(tgt, "—"), verdict(r, info))
	}
	ratios := ratioRows(rep.Results)
	if len(ratios) > 0 {
		fmt.Fprintf(&b, "\nmigu against PyTorch on the same scenario (peak RSS: lower is better; tokens/s: higher is better):\n\n| shape | case | recompute | peak RSS migu/torch | tokens/s migu/torch |\n|---|---|---|---|---|\n")
		for _, row := range ratios {
			fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %.2f |\n", row.Shape, row.Case, or(row.Recompute, "—"), row.rss, row.tps)
		}
	}
	fmt.Fprintf(&b, "\nRaw results: %s beside this file. How to run and what the rows mean: README.md.\n", jsonName)
	return b.String()
}

// ratioRow compares the two sides of one scenario.
type ratioRow struct {
	scenario
	rss, tps float64
}

// ratioRows pairs every training scenario that ran on both sides.
func ratioRows(results []*result) []ratioRow {
	var rows []ratioRow
	for _, m := range results {
		if m.Side != "migu" || m.Case == "export" || !m.ok() || len(m.StepS) == 0 {
			continue
		}
		for _, t := range results {
			if t.Side == "torch" && t.scenario == m.scenario && t.ok() && len(t.StepS) > 0 {
				rows = append(rows, ratioRow{m.scenario, m.PeakRSSMB / t.PeakRSSMB, m.tokensPerS() / t.tokensPerS()})
			}
		}
	}
	return rows
}

func batchText(r *result) string {
	if r.Batch == 0 {
		return "—"
	}
	return fmt.Sprintf("%d × %d", r.Batch, r.Seq)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
