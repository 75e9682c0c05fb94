package main

import (
	"github.com/migu-ml/migu/adapters"
	"github.com/migu-ml/migu/internal/badinput"
)

// settingFlags maps every setting that library errors name
// (badinput.Setting, the name a job's configuration gives it) to the flag
// that sets it, so an error about a setting names what the user typed.
// Adapter settings are not listed: an adapter kind's option name is its
// flag (adapters.Option).
var settingFlags = map[badinput.Setting]string{
	"batch_size":      "--batch-size",
	"bucket":          "--bucket",
	"chat_template":   "--chat-template",
	"cl_mode":         "--cl-mode",
	"clip_norm":       "--clip",
	"data":            "--data",
	"data_dir":        "--data-dir",
	"dtype":           "--dtype",
	"epochs":          "--epochs",
	"eval_batch_size": "--eval-batch-size",
	"format":          "--format",
	"from":            "--from",
	"grad_accum":      "--grad-accum",
	"keep":            "--keep",
	"limit":           "--limit",
	"lora_only":       "--lora-only",
	"lr":              "--lr",
	"max_len":         "--max-len",
	"max_line_bytes":  "--max-line-bytes",
	"max_steps":       "--max-steps",
	"memory_limit":    "--memory-limit",
	"method":          "--method",
	"migu_mode":       "--migu-mode",
	"migu_t":          "--migu",
	"model":           "--model",
	"num_fewshot":     "--num-fewshot",
	"ort_lib":         "--ort-lib",
	"out":             "--out",
	"precision":       "--precision",
	"products":        "--products",
	"recompute":       "--recompute",
	"resume":          "--resume",
	"samples":         "--samples",
	"save_every":      "--save-every",
	"schedule":        "--schedule",
	"sequence":        "--sequence",
	"stride":          "--stride",
	"task":            "--task",
	"tasks":           "--tasks",
	"temperature":     "--temperature",
	"template":        "--template",
	"test_samples":    "--test-samples",
	"threads":         "--threads",
	"train_samples":   "--train-samples",
	"trainable":       "--trainable",
	"val_samples":     "--val-samples",
	"warmup":          "--warmup",
	"weight_decay":    "--weight-decay",
}

// fileOnly are the settings no flag sets: code (and a job's file) can give
// them, so their errors name them as they are.
var fileOnly = map[badinput.Setting]bool{
	"beta1":            true,
	"beta2":            true,
	"eps":              true,
	"inter_op_threads": true,
	"total_steps":      true,
}

// flagOf spells a setting as its flag; a file-only or unknown setting
// keeps its name.
func flagOf(s badinput.Setting) string {
	if f, ok := settingFlags[s]; ok {
		return f
	}
	for _, o := range adapters.AllOptions() {
		if o.Name == string(s) {
			return "--" + o.Name
		}
	}
	return string(s)
}
