//! What the host puts into and makes of provider calls beyond the wire format:
//! sampling settings, timeouts retried within the budget, llama.cpp's context
//! error, price keys, and unknown costs.

use std::time::Duration;

use cbench::llm::prices::PriceTable;
use cbench::llm::providers::transport::RetryPolicy;
use cbench::llm::providers::{ProviderOptions, Sampling};
use cbench::llm::LlmError;
use serde_json::json;

use crate::mock_llm::{MockLlm, Reply};
use crate::providers::{brief, complete, fast_retries, options, request, wires};

#[test]
fn the_output_cap_and_temperature_reach_every_provider_in_its_own_terms() {
    for wire in wires() {
        let mock = MockLlm::scripted(vec![Reply::ok((wire.text_reply)("ok"))]);
        let opts = ProviderOptions {
            sampling: Sampling {
                max_output_tokens: Some(321),
                temperature: Some(0.25),
            },
            ..options(&mock, &wire, fast_retries(0))
        };
        let model = cbench::llm::resolve_with(wire.model, &opts).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(model.session(&brief()).complete(&request(false)))
            .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
        let body = &mock.received()[0].body;
        let (cap, temperature) = if wire.model.starts_with("gemini/") {
            (
                &body["generationConfig"]["maxOutputTokens"],
                &body["generationConfig"]["temperature"],
            )
        } else {
            (&body["max_tokens"], &body["temperature"])
        };
        assert_eq!(cap, &json!(321), "{}: {body:#}", wire.model);
        assert_eq!(temperature, &json!(0.25), "{}: {body:#}", wire.model);
    }
}

#[test]
fn a_plugins_request_options_reach_every_provider_and_the_runs_settings_win() {
    for wire in wires() {
        let plugin_options = cbench::llm::RequestOptions {
            max_output_tokens: Some(500),
            temperature: Some(0.9),
            stop: vec!["</done>".into(), "\nObservation:".into()],
        };
        let mut req = request(false);
        req.options = plugin_options.clone();
        let field = |body: &serde_json::Value, openai: &str, anthropic: &str, gemini: &str| {
            if wire.model.starts_with("gemini/") {
                body["generationConfig"][gemini].clone()
            } else if wire.model.starts_with("anthropic/") {
                body[anthropic].clone()
            } else {
                body[openai].clone()
            }
        };
        // Only the plugin's options: they are sent as asked.
        let mock = MockLlm::scripted(vec![Reply::ok((wire.text_reply)("ok"))]);
        let model =
            cbench::llm::resolve_with(wire.model, &options(&mock, &wire, fast_retries(0))).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(model.session(&brief()).complete(&req))
            .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
        let body = &mock.received()[0].body;
        assert_eq!(
            field(body, "stop", "stop_sequences", "stopSequences"),
            json!(["</done>", "\nObservation:"]),
            "{}: {body:#}",
            wire.model
        );
        assert_eq!(
            field(body, "temperature", "temperature", "temperature"),
            json!(0.9),
            "{}: {body:#}",
            wire.model
        );
        assert_eq!(
            field(body, "max_tokens", "max_tokens", "maxOutputTokens"),
            json!(500),
            "{}: {body:#}",
            wire.model
        );

        // The run fixed temperature and a smaller cap: those win; stop still goes through.
        let mock = MockLlm::scripted(vec![Reply::ok((wire.text_reply)("ok"))]);
        let opts = ProviderOptions {
            sampling: Sampling {
                max_output_tokens: Some(200),
                temperature: Some(0.0),
            },
            ..options(&mock, &wire, fast_retries(0))
        };
        let model = cbench::llm::resolve_with(wire.model, &opts).unwrap();
        rt.block_on(model.session(&brief()).complete(&req))
            .unwrap_or_else(|e| panic!("{}: {e}", wire.model));
        let body = &mock.received()[0].body;
        assert_eq!(
            field(body, "temperature", "temperature", "temperature"),
            json!(0.0),
            "{}: {body:#}",
            wire.model
        );
        assert_eq!(
            field(body, "max_tokens", "max_tokens", "maxOutputTokens"),
            json!(200),
            "{}: {body:#}",
            wire.model
        );
        assert_eq!(
            field(body, "stop", "stop_sequences", "stopSequences"),
            json!(["</done>", "\nObservation:"]),
            "{}: {body:#}",
            wire.model
        );
    }
}

#[test]
fn a_request_timeout_longer_than_the_wait_budget_is_still_retried() {
    // The default shape: one request may take longer than all retry waits together.
    let wire = &wires()[0];
    let mock = MockLlm::scripted(vec![
        Reply::ok((wire.text_reply)("late")).after(Duration::from_secs(3)),
        Reply::ok((wire.text_reply)("on time")),
    ]);
    let policy = RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_total_wait: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
    };
    let c = complete(&mock, wire, policy, &request(false)).expect("retried after the timeout");
    assert_eq!(c.content, "on time");
    assert_eq!(c.retries.len(), 1);
    assert!(
        c.retries[0].reason.starts_with("timeout"),
        "{:?}",
        c.retries
    );
}

#[test]
fn a_call_that_finally_fails_names_every_retry() {
    let wire = &wires()[0];
    let mock = MockLlm::scripted(vec![
        Reply::status(503, "{}"),
        Reply::status(429, "{}"),
        Reply::status(503, "{}"),
    ]);
    let err = complete(&mock, wire, fast_retries(2), &request(false)).expect_err("down");
    let LlmError::Unavailable(text) = err else {
        panic!("a provider outage must be Unavailable, got {err:?}");
    };
    assert!(
        text.contains("HTTP 503 after 3 attempt(s)")
            && text.contains("earlier: HTTP 503, HTTP 429"),
        "{text}"
    );
}

#[test]
fn llama_cpp_context_size_errors_are_context_length_errors() {
    let wire = &wires()[0];
    let body = r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#;
    let mock = MockLlm::scripted(vec![Reply::status(400, body)]);
    let err = complete(&mock, wire, fast_retries(3), &request(false)).expect_err("400");
    assert!(err.to_string().contains("context length exceeded"), "{err}");
    assert_eq!(mock.received().len(), 1, "a context error was retried");
}

#[test]
fn a_price_key_may_be_the_full_model_string() {
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.json");
    std::fs::write(
        &prices,
        json!({"models": {"openai/smollm2-135m": {"input": 1.0, "output": 2.0}}}).to_string(),
    )
    .unwrap();
    let table = PriceTable::with_overrides(&prices).expect("a valid price file");
    assert!(table.lookup("openai/smollm2-135m").is_some());
    assert!(PriceTable::builtin()
        .lookup("openai/smollm2-135m")
        .is_none());
}
