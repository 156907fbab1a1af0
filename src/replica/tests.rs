use std::sync::Arc;

use super::*;
use crate::causal::SystemClock;
use crate::storage::SyncPolicy;

fn options() -> Options {
    Options {
        sync: SyncPolicy::None,
        merge_trigger: None,
        ..Options::default()
    }
}

fn open(dir: &Path, node: &str) -> Replica {
    Replica::open(
        dir,
        node,
        options(),
        merkle::Filing::new(
            crate::ring::Ring::new(vec![node.to_owned()], 8),
            1,
            Default::default(),
        ),
        Arc::new(SystemClock),
        &|| fastrand::u64(..),
        Limits::default(),
    )
    .expect("open replica")
}

/// Replicas "a" and "b" in directories of their own (kept alive by the returned guards).
fn two_replicas() -> (tempfile::TempDir, tempfile::TempDir, Replica, Replica) {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (a, b) = (open(a_dir.path(), "a"), open(b_dir.path(), "b"));
    (a_dir, b_dir, a, b)
}

fn put(data: &str) -> WriteOp {
    WriteOp::Put {
        data: data.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        meta: Vec::new(),
    }
}

fn values(state: &KeyState) -> Vec<String> {
    let mut v: Vec<String> = state
        .live_values()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.data).into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_clean_restart_keeps_the_actor_and_a_crash_or_wipe_changes_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = open(tmp.path(), "n1");
    let actor = first.actor();
    first.close().expect("close");
    drop(first);
    let second = open(tmp.path(), "n1");
    assert_eq!(second.actor(), actor, "clean restart keeps the epoch");
    drop(second); // no close: as after a crash
    let third = open(tmp.path(), "n1");
    assert_ne!(third.actor(), actor, "unclean restart draws a new epoch");
    drop(third);
    std::fs::remove_dir_all(tmp.path()).expect("wipe");
    let fourth = open(tmp.path(), "n1");
    assert_ne!(fourth.actor(), actor);
}

/// Riak's kv679_dataloss: a node that lost its data must not reissue dots it handed out.
#[tokio::test]
async fn a_wiped_node_never_reuses_a_dot() {
    let (a_dir, _b_dir, a, b) = two_replicas();
    let ctx = VersionVector::new();
    let first = a
        .coordinate(
            "b",
            "k",
            Conflict::Siblings,
            &ctx,
            put("v1"),
            fastrand::u64(1..),
        )
        .await
        .expect("write v1")
        .0;
    b.sync("b", "k", &first).await.expect("replicate v1");
    drop(a);
    std::fs::remove_dir_all(a_dir.path()).expect("wipe a");
    let a = open(a_dir.path(), "a");
    let second = a
        .coordinate(
            "b",
            "k",
            Conflict::Siblings,
            &ctx,
            put("v2"),
            fastrand::u64(1..),
        )
        .await
        .expect("write v2")
        .0;
    let on_b = b.sync("b", "k", &second).await.expect("replicate v2");
    assert_eq!(
        values(&on_b),
        ["v1", "v2"],
        "the new write must not look already seen"
    );
}

#[tokio::test]
async fn lww_keys_keep_the_latest_write_and_sync_converges() {
    let (_a_dir, _b_dir, a, b) = two_replicas();
    let ctx = VersionVector::new();
    let old = a
        .coordinate(
            "s",
            "k",
            Conflict::Lww,
            &ctx,
            put("old"),
            fastrand::u64(1..),
        )
        .await
        .expect("old")
        .0;
    b.sync("s", "k", &old).await.expect("sync");
    let newer = b
        .coordinate(
            "s",
            "k",
            Conflict::Lww,
            &ctx,
            put("new"),
            fastrand::u64(1..),
        )
        .await
        .expect("new")
        .0;
    let on_a = a.sync("s", "k", &newer).await.expect("sync back");
    assert_eq!(values(&on_a), ["new"]);
    let on_b = b.sync("s", "k", &on_a).await.expect("sync again");
    assert_eq!(on_a, on_b);
}

/// A bucket's `conflict` changed while it held data (Riak clients flip `allow_mult`): writes
/// go on, nothing written before is dropped unseen, and replicas still under the old mode
/// converge with the new.
#[tokio::test]
async fn a_key_written_under_one_conflict_mode_takes_writes_under_the_other() {
    let (_a_dir, _b_dir, a, b) = two_replicas();
    let blind = VersionVector::new();
    let lww = a
        .coordinate("m", "k", Conflict::Lww, &blind, put("lww"), 1)
        .await
        .expect("lww write")
        .0;
    b.sync("m", "k", &lww).await.expect("replicate");
    // Now siblings: the lww value is kept beside the first write that does not cover it.
    let both = a
        .coordinate("m", "k", Conflict::Siblings, &blind, put("sib"), 2)
        .await
        .expect("siblings write over an lww key")
        .0;
    assert_eq!(values(&both), ["lww", "sib"]);
    // b still holds the lww state: the later write wins, on both sides alike.
    let on_b = b.sync("m", "k", &both).await.expect("sync across modes");
    assert_eq!(on_b, both);
    assert_eq!(lww.merge(&both), both.merge(&lww));
    // Back to lww: the write supersedes the siblings.
    let last = a
        .coordinate("m", "k", Conflict::Lww, &blind, put("last"), 3)
        .await
        .expect("lww write over siblings")
        .0;
    assert_eq!(values(&last), ["last"]);
    assert_eq!(
        values(&b.sync("m", "k", &last).await.expect("sync")),
        ["last"]
    );
}

#[tokio::test]
async fn a_bucket_whose_n_changes_has_its_keys_filed_under_the_new_trees() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = open(tmp.path(), "n1");
    let _ = r
        .coordinate(
            "few",
            "k",
            Conflict::Siblings,
            &VersionVector::new(),
            put("v"),
            1,
        )
        .await
        .expect("write");
    let old = r.filing.read().tree_of("few", "k");
    r.refile([("few".to_owned(), 3)].into());
    let new = r.filing.read().tree_of("few", "k");
    assert_ne!(old, new);
    assert!(
        r.trees.groups(old).iter().all(|&h| h == 0),
        "left the old tree"
    );
    assert!(
        r.trees.groups(new).iter().any(|&h| h != 0),
        "filed in the new one"
    );
}

#[tokio::test]
async fn trees_rebuilt_at_open_match_the_trees_kept_by_writes_and_digests_come_in_whole_leaves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tree = |r: &Replica| r.filing.read().tree_of("b", "k0");
    let (groups, leaf_keys) = {
        let r = open(tmp.path(), "n1");
        for i in 0..300u64 {
            let (key, op) = (format!("k{}", i % 200), put(&format!("v{i}")));
            let context = r
                .read("b", &key)
                .expect("read")
                .map(|s| s.context())
                .unwrap_or_default();
            let _ = r
                .coordinate("b", &key, Conflict::Siblings, &context, op, i + 1)
                .await
                .expect("write");
        }
        for i in 0..20 {
            r.forget(&storage_key("b", &format!("k{i}")))
                .await
                .expect("forget");
        }
        let t = tree(&r);
        let counts: Vec<u32> = (0..merkle::LEAVES)
            .map(|l| r.trees.leaf_keys(t, l))
            .collect();
        // Keys k20..k199 are live, spread over the ring's partitions.
        let live = (20..200)
            .filter(|i| r.filing.read().tree_of("b", &format!("k{i}")) == t)
            .count();
        assert!(live > 5);
        assert_eq!(counts.iter().sum::<u32>() as usize, live);
        let all: Vec<u32> = (0..merkle::LEAVES as u32).collect();
        let whole = r.digests(t, &all, usize::MAX);
        assert_eq!(whole.iter().map(|(_, d)| d.len()).sum::<usize>(), live);
        for (leaf, digests) in &whole {
            assert_eq!(digests.len() as u32, counts[*leaf as usize]);
            for (skey, hash) in digests {
                assert_eq!(r.storage.hash_of(skey), Some(*hash));
            }
        }
        // A small budget still answers whole leaves, in the order asked, one at least.
        let busy: Vec<u32> = all
            .iter()
            .copied()
            .filter(|&l| counts[l as usize] > 0)
            .collect();
        let some = r.digests(t, &busy, 3);
        assert!(!some.is_empty());
        assert!(some.iter().zip(&busy).all(|((l, _), want)| l == want));
        let kept: usize = some.iter().map(|(_, d)| d.len()).sum();
        assert!(
            some.len() == 1 || kept <= 3,
            "{kept} keys in {} leaves",
            some.len()
        );
        r.close().expect("close");
        (r.trees.groups(t), counts)
    };
    let r = open(tmp.path(), "n1");
    let t = tree(&r);
    assert_eq!(r.trees.groups(t), groups, "rebuilt from the keydir alone");
    let counts: Vec<u32> = (0..merkle::LEAVES)
        .map(|l| r.trees.leaf_keys(t, l))
        .collect();
    assert_eq!(counts, leaf_keys);
}
