//! TLS on the client API: `curl --cacert` with the node's certificate works, plain HTTP to
//! the same port is refused, and a client that does not trust the certificate is refused.

mod support;

use std::process::Command;

use support::TestCluster;

fn curl(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("curl").args(args).output().ok()?;
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_the_certificate_works_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_pem, key_pem) =
        quorumkv::api::tls::self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("cert");
    let (cert, key) = (dir.path().join("node.crt"), dir.path().join("node.key"));
    std::fs::write(&cert, cert_pem).expect("cert file");
    std::fs::write(&key, key_pem).expect("key file");
    let c = TestCluster::start_with(3, |config| {
        config.http.tls_cert_file = Some(cert.clone());
        config.http.tls_key_file = Some(key.clone());
    })
    .await;
    let port = c.configs[0].http_addr.port();
    let cacert = cert.display().to_string();
    let https = format!("https://localhost:{port}/health");
    let Some((ok, body)) = curl(&["-s", "--max-time", "5", "--cacert", &cacert, &https]) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the TLS test: curl is missing"
        );
        eprintln!("skipped: curl is not installed");
        return;
    };
    assert!(ok, "curl --cacert failed: {body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    // A PUT and a GET over TLS, as a client would.
    let kv = format!("https://localhost:{port}/kv/carts/tls");
    let (put_ok, _) = curl(&[
        "-s",
        "--max-time",
        "5",
        "--cacert",
        &cacert,
        "-X",
        "PUT",
        "-H",
        "content-type: text/plain",
        "--data",
        "sealed",
        &kv,
    ])
    .expect("curl");
    assert!(put_ok);
    let (get_ok, value) = curl(&["-s", "--max-time", "5", "--cacert", &cacert, &kv]).expect("curl");
    assert!(get_ok && value == "sealed", "{value}");
    // The bundled client, trusting the node's certificate.
    let kv = std::process::Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args([
            "kv",
            "get",
            "carts",
            "tls",
            "--node",
            &format!("https://localhost:{port}"),
            "--cacert",
            &cacert,
            "--contexts",
        ])
        .arg(dir.path().join("contexts.json"))
        .output()
        .expect("kv");
    assert!(
        kv.status.success(),
        "{}",
        String::from_utf8_lossy(&kv.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&kv.stdout).trim(), "sealed");
    // The load generator too.
    let bench = std::process::Command::new(env!("CARGO_BIN_EXE_quorumkv"))
        .args([
            "bench",
            "--nodes",
            &format!("localhost:{port}"),
            "--cacert",
            &cacert,
        ])
        .args(["--ops", "200", "--clients", "2", "--keys", "20", "--out"])
        .arg(dir.path().join("results"))
        .output()
        .expect("bench");
    let report = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    assert!(report.contains(" 0 errors"), "{report}");
    // Without trusting the certificate: refused by the client.
    let (untrusted, _) = curl(&["-s", "--max-time", "5", &https]).expect("curl");
    assert!(!untrusted, "curl accepted a certificate it was not given");
    // Plain HTTP to the TLS port: no answer.
    let plain = c
        .client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    c.shutdown().await;
}
