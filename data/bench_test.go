package data

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/migu-ml/migu/tokenizer"
)

var benchTok = sync.OnceValues(func() (*tokenizer.Tokenizer, error) {
	return tokenizer.Train(tokenizer.SampleCorpus(3000, 1), tokenizer.TrainOptions{Kind: tokenizer.SentencePieceBPE, VocabSize: 2000})
})

// instructionFile writes n instruction records made of the tokenizer's
// sample corpus (a quarter with an input) as JSON lines.
func instructionFile(b *testing.B, n int) string {
	lines := tokenizer.SampleCorpus(3*n, 2)
	var sb strings.Builder
	enc := json.NewEncoder(&sb)
	for i := range n {
		rec := map[string]string{"instruction": lines[3*i], "output": lines[3*i+1] + " " + lines[3*i+2]}
		if i%4 == 0 {
			rec["input"] = lines[3*i+2]
		}
		enc.Encode(rec)
	}
	return writeFile(b, b.TempDir(), "inst.jsonl", sb.String())
}

// BenchmarkPipeline reads, tokenizes (Alpaca template, clm) and batches
// 10k instruction records: one epoch of batches of 8 with length
// bucketing, the whole pipeline per iteration.
func BenchmarkPipeline(b *testing.B) {
	tok, err := benchTok()
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	path := instructionFile(b, n)
	for _, bucket := range []int{0, 64} {
		b.Run(fmt.Sprintf("bucket=%d", bucket), func(b *testing.B) {
			tokens, padded := 0, 0
			for b.Loop() {
				ds, err := Read(path, ReadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				enc, err := NewEncoder(tok, Config{Objective: CLM, MaxLen: 256, Specials: Specials{BOS: 1, EOS: 2, PAD: 0, MASK: -1, DecoderStart: -1}})
				if err != nil {
					b.Fatal(err)
				}
				ex, err := enc.Encode(ds)
				if err != nil {
					b.Fatal(err)
				}
				ld, err := NewLoader(ex, BatchOptions{BatchSize: 8, Seed: 1, Bucket: bucket})
				if err != nil {
					b.Fatal(err)
				}
				for {
					batch, err := ld.Next()
					if err == io.EOF {
						break
					}
					tokens += batch.Tokens
					padded += batch.Size * batch.SeqLen
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric(1-float64(tokens)/float64(padded), "pad-share")
		})
	}
}

// BenchmarkBatches measures the loader alone: one epoch of padded batches
// from 10k encoded instruction records.
func BenchmarkBatches(b *testing.B) {
	tok, err := benchTok()
	if err != nil {
		b.Fatal(err)
	}
	ds, err := Read(instructionFile(b, 10000), ReadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	enc, _ := NewEncoder(tok, Config{Objective: CLM, MaxLen: 256, Specials: Specials{BOS: 1, EOS: 2, PAD: 0, MASK: -1, DecoderStart: -1}})
	ex, err := enc.Encode(ds)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ld, _ := NewLoader(ex, BatchOptions{BatchSize: 8, Seed: 1, Bucket: 64})
		for {
			if _, err := ld.Next(); err == io.EOF {
				break
			}
		}
	}
	b.ReportMetric(float64(10000*b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkRead measures reading 100k JSON lines.
func BenchmarkRead(b *testing.B) {
	path := instructionFile(b, 100000)
	for b.Loop() {
		if _, err := Read(path, ReadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(100000*b.N)/b.Elapsed().Seconds(), "records/s")
}
