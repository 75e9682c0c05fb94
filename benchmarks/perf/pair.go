package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/migu-ml/migu/data"
	"github.com/migu-ml/migu/onnx/ort"
	"github.com/migu-ml/migu/train"
)

// pairSample is what the pair workers print: per step pair, the wall and
// CPU seconds of the step without the change (off: MIGU off, or every
// product in MLAS) and of the step with it (on).
type pairSample struct {
	OffS    []float64 `json:"off_s"`
	OnS     []float64 `json:"on_s"`
	OffCPUS []float64 `json:"off_cpu_s"`
	OnCPUS  []float64 `json:"on_cpu_s"`
}

// workPair measures MIGU's cost in one process: two trainers of the same
// model, without and with MIGU, take turns step by step (off, on, on, off,
// …), so that the load of other processes on a shared machine falls alike
// on both; separate processes minutes apart differ by ±20 % there, more
// than the cost being measured.
func workPair(o *options) error {
	return pairSteps(o, benchSetup{}, benchSetup{withMIGU: true})
}

// workOneDNNPair measures oneDNN's products the same way: two trainers
// of the same model (MIGU as -with-migu says), one with the products
// -onednn-off names in oneDNN (default none: every product in ORT's
// MLAS), one with those -onednn names (empty: what --products auto
// picks), taking turns step by step.
func workOneDNNPair(o *options) error {
	off, err := parseOneDNN(o.onednnOff)
	if err != nil {
		return err
	}
	on, err := parseOneDNN(o.onednn)
	if err != nil {
		return err
	}
	return pairSteps(o, benchSetup{withMIGU: o.withMIGU, oneDNN: off}, benchSetup{withMIGU: o.withMIGU, oneDNN: on})
}

// workModelPair measures a change to an exporter the same way: two model
// folders of one model (-model before the change, -model-b after it),
// trained alike (MIGU as -with-migu says), taking turns step by step.
func workModelPair(o *options) error {
	if o.modelB == "" {
		return fmt.Errorf("-worker model-pair needs -model-b")
	}
	return pairSteps(o, benchSetup{withMIGU: o.withMIGU}, benchSetup{withMIGU: o.withMIGU, model: o.modelB})
}

// workRowsPair measures the head on labelled tokens the same way: one
// trainer runs the head on every token (train.Config.AllRows), the other
// on the labelled ones (MIGU as -with-migu says), taking turns step by
// step.
func workRowsPair(o *options) error {
	return pairSteps(o, benchSetup{withMIGU: o.withMIGU, allRows: true}, benchSetup{withMIGU: o.withMIGU})
}

// workSharePair measures bf16 operands rounded once the same way: one
// trainer lets every bf16 product round its operands, the other reads
// trained weights from their bf16 twins and rounds other shared operands
// once (train.Config.BF16Sharing never and always; MIGU as -with-migu
// says; run it with -migu-precision bf16).
func workSharePair(o *options) error {
	if o.precision != train.PrecisionBF16 {
		return fmt.Errorf("-worker share-pair needs -migu-precision bf16")
	}
	return pairSteps(o, benchSetup{withMIGU: o.withMIGU, bf16Sharing: train.BF16ShareNever},
		benchSetup{withMIGU: o.withMIGU, bf16Sharing: train.BF16ShareAlways})
}

// workBiasPair measures the linear layers' biases added by their oneDNN
// products the same way: one trainer keeps the bias Adds apart
// (train.Config.BiasAdds), the other folds them into the products (MIGU
// as -with-migu says; with -migu-precision bf16 the bf16 products').
func workBiasPair(o *options) error {
	return pairSteps(o, benchSetup{withMIGU: o.withMIGU, biasAdds: true}, benchSetup{withMIGU: o.withMIGU})
}

// workAttentionPair measures the fused attention the same way: one trainer
// keeps attention in standard operators (train.Config.UnfusedAttention;
// its products in oneDNN's BatchMatMul where migu train puts them there),
// the other fuses it (kernels.FuseAttention), as migu train does.
func workAttentionPair(o *options) error {
	return pairSteps(o, benchSetup{withMIGU: o.withMIGU, unfusedAtt: true}, benchSetup{withMIGU: o.withMIGU})
}

// pairSteps runs a trainer of each setup, off and on, in turns (off, on,
// on, off, …) and prints their pairSample.
func pairSteps(o *options, offSetup, onSetup benchSetup) error {
	if err := ort.Init(ort.InitOptions{}); err != nil {
		return err
	}
	off, err := newBenchTrainer(o, offSetup)
	if err != nil {
		return err
	}
	defer off.close()
	on, err := newBenchTrainer(o, onSetup)
	if err != nil {
		return err
	}
	defer on.close()
	bs := batches(o.arch, off.man.VocabSize, 4, o.batch, o.seq, o.prompt)
	var s pairSample
	for i := range o.warmup + o.steps {
		b := []*data.Batch{bs[i%len(bs)]}
		first, second := off, on
		if i%2 == 1 {
			first, second = on, off
		}
		for _, t := range []*benchTrainer{first, second} {
			start, cpu := time.Now(), cpuSeconds()
			if _, err := t.tr.TrainStep(b, true); err != nil {
				return err
			}
			if i < o.warmup {
				continue
			}
			wall, c := time.Since(start).Seconds(), cpuSeconds()-cpu
			if t == on {
				s.OnS, s.OnCPUS = append(s.OnS, wall), append(s.OnCPUS, c)
			} else {
				s.OffS, s.OffCPUS = append(s.OffS, wall), append(s.OffCPUS, c)
			}
		}
	}
	return json.NewEncoder(os.Stdout).Encode(s)
}
