//! The peer port's trust boundary: with a cluster secret, a process that has the config but not
//! the secret cannot complete a handshake, whatever node id it claims, and nothing it sends is
//! stored; a holder of the secret must still name a member.

mod support;

use std::sync::Arc;
use std::time::Duration;

use quorumkv::net::{Dialer, Faults, Identity, Net, NoiseDialer, TcpDialer};
use quorumkv::rpc::{self, PutRequest, Request, WriteOp};
use quorumkv::secret::ClusterSecret;
use reqwest::StatusCode;
use support::TestCluster;

fn write_secret(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, ClusterSecret) {
    let secret = ClusterSecret::generate().expect("random");
    let path = dir.join(name);
    std::fs::write(&path, secret.to_file_text()).expect("write secret");
    (path, secret)
}

/// A put as a node would forward it, from a caller claiming to be `claimed`.
async fn forged_put(
    c: &TestCluster,
    target: usize,
    claimed: &str,
    dialer: Arc<dyn Dialer>,
) -> Result<bytes::Bytes, quorumkv::net::NetError> {
    let config = &c.configs[target];
    let identity = Identity::new(
        claimed,
        config.cluster_hash(),
        c.configs.iter().map(|c| c.node_id.clone()),
    );
    let net = Net::new(
        identity,
        [(config.node_id.clone(), config.peer_addr)],
        Arc::new(Faults::default()),
        dialer,
    );
    let request = Request::Put(PutRequest {
        bucket: "carts".into(),
        key: "stolen".into(),
        context: Vec::new(),
        op: WriteOp::Put {
            data: b"owned".to_vec(),
            content_type: "text/plain".into(),
            meta: Vec::new(),
        },
        write_id: 7,
        w: 1,
        pw: 0,
        timeout_ms: 1000,
    });
    net.call(
        &config.node_id,
        rpc::encode(&request).into(),
        Duration::from_secs(3),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_holder_of_the_secret_naming_a_member_reaches_the_replicas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, secret) = write_secret(dir.path(), "cluster.secret");
    let (_, wrong) = write_secret(dir.path(), "other.secret");
    let c = TestCluster::start_with(3, |config| {
        config.security.cluster_secret_file = Some(path.clone());
    })
    .await;
    c.all_up().await;
    // Members talk: a write needing every replica goes through.
    let put = c.put(0, "/kv/carts/fine?w=all", None, "ok").await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());

    for claimed in ["n2", "evil"] {
        let plain = forged_put(&c, 0, claimed, Arc::new(TcpDialer::default())).await;
        assert!(plain.is_err(), "plain TCP claiming {claimed}: {plain:?}");
        let wrong_secret = Arc::new(NoiseDialer::new(
            Arc::new(TcpDialer::default()),
            wrong.link_key(),
        ));
        let guessed = forged_put(&c, 0, claimed, wrong_secret).await;
        assert!(
            guessed.is_err(),
            "wrong secret claiming {claimed}: {guessed:?}"
        );
    }
    // The secret is not enough: the hello must name a member.
    let right = Arc::new(NoiseDialer::new(
        Arc::new(TcpDialer::default()),
        secret.link_key(),
    ));
    let outsider = forged_put(&c, 0, "evil", right).await;
    assert!(outsider.is_err(), "secret but not a member: {outsider:?}");

    for i in 0..3 {
        let got = c.get(i, "/kv/carts/stolen?r=all").await;
        assert_eq!(
            got.status,
            StatusCode::NOT_FOUND,
            "n{} stored a forged write",
            i + 1
        );
        let own = c.get(i, "/admin/replica/carts/stolen").await;
        assert_eq!(own.status, StatusCode::NOT_FOUND);
    }
    c.shutdown().await;
}
