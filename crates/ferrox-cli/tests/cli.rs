//! The `ferrox` binary end to end: `generate` prints transformers' greedy text for the tiny
//! Llama and mlx-lm's statistics, `chat` runs under a pipe, `cache-prompt` files continue,
//! every command's `--help` lists mlx-lm's flags, and bad input is an error, never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny() -> String {
    root().join("models/tiny-llama").display().to_string()
}

/// Runs `ferrox args...` with `stdin` piped in.
fn ferrox(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrox"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn generate_prints_transformers_greedy_text_and_statistics() {
    // scripts/make_tiny_models.py: the prompt's ids and 24 greedy ids from transformers.
    let want: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("crates/ferrox-lm/tests/fixtures/tiny-llama.json")).unwrap(),
    )
    .unwrap();
    let ids =
        |k: &str| -> Vec<u32> { want[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
    let tokenizer = ferrox_lm::Tokenizer::load(Path::new(&tiny())).unwrap();
    assert!(ids("greedy").iter().all(|t| !tokenizer.eos_token_ids.contains(t)));
    let greedy_text = tokenizer.decode(&ids("greedy"), false).unwrap();
    let prompt = want["prompt"].as_str().unwrap();
    let out = ferrox(&["generate", "--model", &tiny(), "--prompt", prompt, "--ignore-chat-template", "-m", "24"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "==========");
    assert!(stdout.contains(&format!("==========\n{greedy_text}\n==========\n")), "{stdout}");
    let prompt_line = format!("Prompt: {} tokens, ", ids("prompt_ids").len());
    assert!(lines.iter().any(|l| l.starts_with(&prompt_line) && l.ends_with(" tokens-per-sec")), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("Generation: 24 tokens, ") && l.ends_with(" tokens-per-sec")));
    assert!(lines.last().unwrap().starts_with("Peak memory: ") && lines.last().unwrap().ends_with(" GB"));

    // `--verbose false` prints the text alone; `-` reads the prompt from standard input.
    let args =
        ["generate", "--model", &tiny(), "--prompt", "-", "--ignore-chat-template", "-m", "24", "--verbose", "false"];
    let out = ferrox(&args, prompt);
    assert_eq!(text(&out.stdout), format!("{greedy_text}\n"));
}

#[test]
fn chat_works_under_a_pipe() {
    let out = ferrox(&["chat", "--model", &tiny(), "-m", "8"], "Hello there\n\nh\nr\nHello there\nq\nnever read\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[INFO] Conversation reset."), "{stdout}");
    // The first reply is what `generate` writes for the same message (greedy), and after the
    // reset the same message gets the same reply again.
    let alone =
        ferrox(&["generate", "--model", &tiny(), "--prompt", "Hello there", "-m", "8", "--verbose", "false"], "");
    let reply = text(&alone.stdout);
    let reply = reply.trim_end_matches('\n');
    assert!(!reply.is_empty());
    assert_eq!(stdout.matches(&format!(">> {reply}\n")).count(), 2, "{stdout}");
    assert!(!stdout.contains("never read"));
    // End of input ends the chat too.
    assert!(ferrox(&["chat", "--model", &tiny(), "-m", "2"], "Hi").status.success());
}

#[test]
fn help_lists_mlx_lm_flags() {
    // mlx-lm 0.32's flags for each command, less those for features ferrox does not have
    // (adapters, remote code, images, speculative decoding, distributed runs).
    let commands: [(&str, &[&str]); 5] = [
        (
            "generate",
            &[
                "--model",
                "--extra-eos-token",
                "--system-prompt",
                "--prompt",
                "--prefill-response",
                "--max-tokens",
                "--temp",
                "--top-p",
                "--min-p",
                "--top-k",
                "--xtc-probability",
                "--xtc-threshold",
                "--min-tokens-to-keep",
                "--seed",
                "--ignore-chat-template",
                "--chat-template-config",
                "--verbose",
                "--max-kv-size",
                "--prefill-step-size",
                "--prompt-cache-file",
                "--kv-bits",
                "--kv-group-size",
                "--quantized-kv-start",
            ],
        ),
        (
            "chat",
            &[
                "--model",
                "--temp",
                "--top-p",
                "--xtc-probability",
                "--xtc-threshold",
                "--seed",
                "--max-kv-size",
                "--prefill-step-size",
                "--max-tokens",
                "--system-prompt",
            ],
        ),
        (
            "cache-prompt",
            &[
                "--model",
                "--max-kv-size",
                "--prompt-cache-file",
                "--prompt",
                "--kv-bits",
                "--kv-group-size",
                "--quantized-kv-start",
            ],
        ),
        (
            "bench",
            &[
                "--model",
                "--prompt-tokens",
                "--generation-tokens",
                "--batch-size",
                "--num-trials",
                "--prefill-step-size",
            ],
        ),
        (
            "convert",
            &[
                "--hf-path",
                "--mlx-path",
                "--quantize",
                "--q-group-size",
                "--q-bits",
                "--q-mode",
                "--dtype",
                "--dequantize",
            ],
        ),
    ];
    for (command, flags) in commands {
        let out = ferrox(&[command, "--help"], "");
        assert!(out.status.success());
        let help = text(&out.stdout);
        for flag in flags {
            // Each flag is listed with a description on its line or the next.
            let line = help.lines().position(|l| l.trim_start().split([' ', ',']).any(|w| w == *flag));
            let line = line.unwrap_or_else(|| panic!("`ferrox {command} --help` lacks {flag}:\n{help}"));
            let described = help.lines().skip(line).take(2).any(|l| {
                l.split("  ").filter(|p| !p.trim().is_empty()).count() > 1 || !l.trim_start().starts_with('-')
            });
            assert!(described, "`ferrox {command} --help`: {flag} has no description");
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let cache = std::env::temp_dir().join(format!("ferrox-cli-{}.safetensors", std::process::id()));
    let cache = cache.display().to_string();
    let m = tiny();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "--model", "/nonexistent/model"], "no such directory"),
        (vec!["generate", "--model", &m, "--max-kv-size", "0"], "max_kv_size must be at least 1"),
        (vec!["generate", "--model", &m, "--prefill-step-size", "0"], "prefill_step_size must be at least 1"),
        (vec!["generate", "--model", &m, "--kv-bits", "7"], "kv bits must be"),
        (
            vec!["generate", "--model", &m, "--kv-bits", "4", "--max-kv-size", "64"],
            "cannot quantize the rotating cache",
        ),
        (vec!["generate", "--model", &m, "--temp", "-1"], "temp must be >= 0"),
        (vec!["generate", "--model", &m, "--top-p", "2"], "top_p must be in [0, 1]"),
        (vec!["generate", "--model", &m, "--chat-template-config", "[1]"], "must be a JSON object"),
        (vec!["generate", "--model", &m, "--extra-eos-token", "no such token"], "is not a token"),
        (
            vec!["generate", "--model", &m, "--prompt-cache-file", "/nonexistent.safetensors"],
            "/nonexistent.safetensors",
        ),
        (
            vec!["cache-prompt", "--model", &m, "--prompt", "Hi", "--prompt-cache-file", &cache, "--max-kv-size", "0"],
            "at least 1",
        ),
        (
            vec![
                "cache-prompt",
                "--model",
                &m,
                "--prompt",
                "Hi",
                "--prompt-cache-file",
                &cache,
                "--kv-bits",
                "8",
                "--max-kv-size",
                "9",
            ],
            "cannot quantize the rotating cache",
        ),
        (vec!["bench", "--model", &m, "-p", "0"], "must be at least 1"),
        (vec!["chat", "--model", &m, "--max-kv-size", "0"], "max_kv_size must be at least 1"),
    ];
    for (args, message) in cases {
        let out = ferrox(&args, "");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(message) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // A prompt cache of another model (a different number of layers) is refused by name.
    let other = root().join("models/tiny-gemma2").display().to_string();
    let out = ferrox(&["cache-prompt", "--model", &other, "--prompt", "Hi", "--prompt-cache-file", &cache], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ferrox(&["generate", "--model", &m, "--prompt-cache-file", &cache], "");
    std::fs::remove_file(&cache).ok();
    assert!(text(&out.stderr).contains("4 layers cached, the model has 2"), "{}", text(&out.stderr));
}

#[test]
fn prompt_cache_names_its_model() {
    // `generate --prompt-cache-file` without --model uses the model the file names (as
    // mlx_lm.generate does; the default model would be tiny-llama), and continues the cache
    // as with --model.
    let qwen = root().join("models/tiny-qwen3").display().to_string();
    let cache = std::env::temp_dir().join(format!("ferrox-cli-pc-{}.safetensors", std::process::id()));
    let cache = cache.display().to_string();
    let made =
        ferrox(&["cache-prompt", "--model", &qwen, "--prompt", "Once upon a time", "--prompt-cache-file", &cache], "");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let run = |model: Option<&str>| {
        let mut args =
            vec!["generate", "--prompt-cache-file", &cache, "--prompt", "and then", "-m", "12", "--verbose", "false"];
        args.extend(model.map(|m| ["--model", m]).into_iter().flatten());
        let out = ferrox(&args, "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let named = run(None);
    assert_eq!(named, run(Some(&qwen)));
    std::fs::remove_file(&cache).ok();
    assert!(named.len() > 1);
}
