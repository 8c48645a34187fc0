//! Live events of a job over SSE, with replay.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, spawn_app};

/// Reads SSE frames until `event: end` and returns (event, id, data) triples.
async fn read_events(
    app: &TestApp,
    job: &str,
    last_event_id: Option<&str>,
) -> Vec<(String, Option<String>, Value)> {
    let mut request = app.authed(app.client.get(app.url(&format!("/v1/jobs/{job}/events"))));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events stream ended in time");
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut event = None;
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).unwrap());
                }
            }
            if let (Some(event), Some(data)) = (event, data) {
                frames.push((event, id, data));
            }
        }
    }
    frames
}

#[actix_web::test]
async fn events_stream_state_and_output_live_then_replay() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("events").await;
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo oops >&2"}),
        )
        .await;
    let frames = read_events(&app, &job, None).await;
    let kinds: Vec<&str> = frames.iter().map(|(e, _, _)| e.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"state"));
    assert_eq!(kinds.last(), Some(&"end"));
    let stdout: String = frames
        .iter()
        .filter(|(e, _, d)| e == "output" && d["stream"] == "stdout")
        .map(|(_, _, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, "line1\nline2\nline3\n");
    let stderr: String = frames
        .iter()
        .filter(|(e, _, d)| e == "output" && d["stream"] == "stderr")
        .map(|(_, _, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(stderr, "oops\n");
    let seqs: Vec<i64> = frames
        .iter()
        .filter(|(e, _, _)| e == "output")
        .map(|(_, id, _)| id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gapless: {seqs:?}"
    );
    let (_, _, end) = frames.last().unwrap();
    assert_eq!(end["status"], "succeeded");
    assert_eq!(end["result"]["stdout"], "line1\nline2\nline3\n");

    // After the fact: the same output is replayed; Last-Event-ID resumes after a chunk.
    let replay = read_events(&app, &job, None).await;
    let replayed: String = replay
        .iter()
        .filter(|(e, _, d)| e == "output" && d["stream"] == "stdout")
        .map(|(_, _, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(replayed, stdout);
    let resumed = read_events(&app, &job, Some(&seqs[0].to_string())).await;
    let resumed_seqs: Vec<i64> = resumed
        .iter()
        .filter(|(e, _, _)| e == "output")
        .map(|(_, id, _)| id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(resumed_seqs, seqs[1..]);
}

#[actix_web::test]
async fn events_of_a_queued_job_wait_for_it() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("later").await;
    let blocker = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "sleep 0.5"}),
        )
        .await;
    let queued = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "printf '\\377\\376'"}),
        )
        .await;
    let frames = read_events(&app, &queued, None).await;
    let states: Vec<&str> = frames
        .iter()
        .filter(|(e, _, _)| e == "state")
        .map(|(_, _, d)| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"queued"), "{frames:?}");
    // Bytes that are not UTF-8 arrive base64-encoded.
    let binary: Vec<&Value> = frames
        .iter()
        .filter(|(e, _, _)| e == "output")
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(binary[0]["base64"], "//4=");
    assert_eq!(frames.last().unwrap().2["status"], "succeeded");
    assert_eq!(app.wait(&blocker).await["status"], "succeeded");
}

/// The `job_followers` gauge: how many followers (event streams, MCP progress) run now.
async fn followers(app: &TestApp) -> Option<i64> {
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("daytona_mcp_job_followers "))
        .map(|v| v.trim().parse().unwrap())
}

/// Waits until the gauge reads `want`; `false` if it never does within 20 s.
async fn followers_become(app: &TestApp, want: i64) -> bool {
    for _ in 0..400 {
        if followers(app).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[actix_web::test]
async fn an_abandoned_event_stream_stops_following_its_job() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    let id = app.sandbox("abandoned").await;
    let job = app
        .submit(
            "execute_shell",
            json!({"sandbox_id": id, "command": "sleep 120"}),
        )
        .await;
    app.wait_for_state(&job, "running").await;
    assert!(followers_become(&app, 0).await);
    // Three clients open the job's events, read its first frame, then go away while the job
    // is silent: nothing is ever written to their connections again.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let response = app.get(&format!("/v1/jobs/{job}/events")).await;
        assert_eq!(response.status().as_u16(), 200);
        let mut body = response.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("event: state"));
        streams.push(body);
    }
    assert!(
        followers_become(&app, 3).await,
        "{:?}",
        followers(&app).await
    );
    drop(streams);
    assert!(
        followers_become(&app, 0).await,
        "{:?}",
        followers(&app).await
    );

    // An MCP call streamed over SSE follows its job too. Without a session (here LangSwarm's
    // dialect, 2025 rules: the job outlives its stream), the follower stops with the stream.
    let lenient = app
        .mcp_request(
            &[],
            &json!({"id": 7, "method": "tools/call", "params": {
                "name": "execute_shell",
                "arguments": {"sandbox_id": id, "command": "sleep 120"},
                "_meta": {"progressToken": "p"}}}),
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(lenient.headers()["content-type"], "text/event-stream");
    let mut lenient = lenient.bytes_stream();
    lenient.next().await.unwrap().unwrap();
    assert!(
        followers_become(&app, 1).await,
        "{:?}",
        followers(&app).await
    );
    drop(lenient);
    assert!(
        followers_become(&app, 0).await,
        "{:?}",
        followers(&app).await
    );
    // In a session the stream stays resumable after a disconnect, so its job stays followed
    // for as long as the session lives; ending the session stops it.
    let session = app.mcp_session("2025-11-25").await;
    let call = session
        .request(
            &json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {
            "name": "execute_shell",
            "arguments": {"sandbox_id": id, "command": "sleep 120"},
            "_meta": {"progressToken": "p"}}}),
        )
        .send()
        .await
        .unwrap();
    let mut in_session = call.bytes_stream();
    in_session.next().await.unwrap().unwrap();
    drop(in_session);
    assert!(
        followers_become(&app, 1).await,
        "{:?}",
        followers(&app).await
    );
    let ended = app
        .authed(app.client.delete(app.url("/mcp")))
        .header("mcp-session-id", &session.id)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status().as_u16(), 204);
    assert!(
        followers_become(&app, 0).await,
        "{:?}",
        followers(&app).await
    );
    let (_, still) = app.get_json(&format!("/v1/jobs/{job}")).await;
    assert_eq!(
        still["status"], "running",
        "the job goes on without its watchers"
    );
    let (status, _) = app.call(&format!("/v1/jobs/{job}/cancel"), json!({})).await;
    assert_eq!(status, 202);
}
