//! The local chat-completions server: OpenAI's wire format, answers from the real model,
//! recorded requests and injected faults.

use std::path::PathBuf;
use std::time::Instant;

use platform_test_support::chat::{ChatModel, Turn};
use platform_test_support::{ChatServer, service_env};
use serde_json::{Value, json};

fn model_dir() -> PathBuf {
    PathBuf::from(service_env("PLATFORM_TEST_CHAT_MODEL_DIR"))
}

fn question(text: &str) -> Value {
    json!({
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": text}
        ],
        "max_tokens": 24
    })
}

/// The data of each `data:` line of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|line| line.strip_prefix("data: ")).map(str::to_owned).collect()
}

#[tokio::test]
async fn answers_streams_and_counts_tokens_like_the_openai_api() -> anyhow::Result<()> {
    let server = ChatServer::start(&model_dir()).await?;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.url());

    let started = Instant::now();
    let whole: Value = client
        .post(&url)
        .json(&question("What is Rust?"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    eprintln!("24 tokens, not streamed: {:?}", started.elapsed());
    let answer = whole["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned();
    assert!(!answer.trim().is_empty(), "{whole}");
    let prompt_tokens = whole["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    let turns = [
        Turn { role: "system".into(), content: "You answer in one short sentence.".into() },
        Turn { role: "user".into(), content: "What is Rust?".into() },
    ];
    assert_eq!(prompt_tokens as usize, server.model().prompt_tokens(&turns)?);
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap_or(0) <= 24, "{whole}");

    // Streamed, the same prompt gives the same text (greedy decoding), piece by piece, then the
    // usage and [DONE].
    let mut streamed = question("What is Rust?");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = client.post(&url).json(&streamed).send().await?.error_for_status()?;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let data = sse_data(&response.text().await?);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|raw| serde_json::from_str(raw))
        .collect::<Result<_, _>>()?;
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, answer);
    assert!(chunks.len() > 4, "tokens arrive one by one: {chunks:?}");
    let usage = &chunks.last().map(|chunk| chunk["usage"].clone()).unwrap_or_default();
    assert_eq!(usage["prompt_tokens"].as_u64(), Some(prompt_tokens), "{usage}");

    // Every request is recorded with its messages as sent.
    let recorded = server.recorded();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].messages, turns);
    assert!(recorded[1].stream && !recorded[0].stream);
    Ok(())
}

#[tokio::test]
async fn faults_are_answered_as_the_api_would() -> anyhow::Result<()> {
    let server = ChatServer::start(&model_dir()).await?;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.url());

    server.fail_next(1, 400, "This model's maximum context length is 8192 tokens");
    let refused = client.post(&url).json(&question("Hi")).send().await?;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await?;
    assert_eq!(body["error"]["message"], "This model's maximum context length is 8192 tokens");

    server.set_down(true);
    assert_eq!(client.post(&url).json(&question("Hi")).send().await?.status(), 503);
    server.set_down(false);

    server.require_key("sk-right");
    assert_eq!(client.post(&url).json(&question("Hi")).send().await?.status(), 401);
    let allowed = client.post(&url).bearer_auth("sk-right").json(&question("Hi")).send().await?;
    assert_eq!(allowed.status(), 200);

    // A prompt longer than the model's context is refused with the reason.
    let long = "word ".repeat(5000);
    let too_long = client.post(&url).bearer_auth("sk-right").json(&question(&long)).send().await?;
    assert_eq!(too_long.status(), 400);
    assert!(too_long.text().await?.contains("context"));

    server.stop();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(client.post(&url).json(&question("Hi")).send().await.is_err(), "stopped means refused");
    Ok(())
}

#[test]
fn the_chat_template_is_chatml() {
    let rendered = ChatModel::render(&[Turn { role: "user".into(), content: "Hi".into() }]);
    assert_eq!(rendered, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}
