//! The stager as the web frontend sees it: typed requests over a real commlink; and its
//! areas surviving a restart.

use crate::common::*;
use commlink::msg::stager::*;
use commlink::{Client, LinkConfig, LinkError};

fn link_config() -> LinkConfig {
    ffs_testkit::link::config()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_over_a_real_commlink() {
    let (dir, cfg) = make_repo();
    let lc = link_config();
    let r = start_with(dir, cfg, Some(lc.clone())).await;
    let client = Client::dial(r.link.unwrap().to_string(), lc);

    let cat = client.request(&CatalogRequest::default()).await.unwrap();
    assert_eq!(cat.releases.len(), 1);
    assert_eq!(cat.releases[0].files.len(), 3);
    assert_eq!(cat.releases[0].notes, "first release");

    let area = client
        .request(&StageRequest {
            product: "tool".into(),
            version: "1.0".into(),
            files: vec!["docs/readme.txt".into()],
            label: "alice".into(),
            ttl_secs: Some(600),
        })
        .await
        .unwrap();
    assert_eq!(area.files.len(), 1);
    assert!(area.https_base.contains(&format!(":{}/d/", r.https.port())));
    assert!(area.ftp_url.contains(&format!(":{}/", r.ftp.port())));
    let (code, body) = curl(&[&format!("{}docs/readme.txt", area.https_base)]).await;
    assert_eq!((code, body.as_slice()), (200, &b"read me first\n"[..]));

    let areas = client.request(&AreasRequest {}).await.unwrap();
    assert_eq!(areas.areas.len(), 1);
    assert_eq!(areas.areas[0].label, "alice");
    assert_eq!(areas.areas[0].bytes, 14);

    let stats = client.request(&StatsRequest {}).await.unwrap();
    assert_eq!(stats.stage_count, 1);
    assert_eq!(stats.method, "hardlink");
    assert!(stats.stage_p99_us >= stats.stage_p50_us && stats.stage_p50_us > 0);

    // The HTTPS download above is recorded as a delivery once its body has gone out.
    ffs_testkit::wait::until(std::time::Duration::from_secs(10), || {
        !r.stager
            .deliveries(&DeliveriesRequest::default())
            .deliveries
            .is_empty()
    })
    .await;
    let d = client
        .request(&DeliveriesRequest {
            after_seq: 0,
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(d.deliveries.len(), 1);
    assert_eq!(d.deliveries[0].protocol, "https");
    assert_eq!(d.deliveries[0].label, "alice");
    let none = client
        .request(&DeliveriesRequest {
            after_seq: d.last_seq,
            limit: None,
        })
        .await
        .unwrap();
    assert!(none.deliveries.is_empty());

    match client
        .request(&StageRequest {
            product: "tool".into(),
            version: "9.9".into(),
            ..Default::default()
        })
        .await
    {
        Err(e @ LinkError::Remote { .. }) => {
            assert_eq!(e.refusal_code(), Some(commlink::RefusalCode::NotFound))
        }
        other => panic!("{other:?}"),
    }
    match client
        .request(&StageRequest {
            product: "../etc".into(),
            version: "1".into(),
            ..Default::default()
        })
        .await
    {
        Err(e @ LinkError::Remote { .. }) => {
            assert_eq!(e.refusal_code(), Some(commlink::RefusalCode::BadRequest))
        }
        other => panic!("{other:?}"),
    }

    let un = client
        .request(&UnstageRequest {
            area_id: area.area_id.clone(),
        })
        .await
        .unwrap();
    assert!(un.removed);
    let (code, _) = curl(&[&format!("{}docs/readme.txt", area.https_base)]).await;
    assert_eq!(code, 404);

    // stager.catalog with the tag of the catalog held: "unchanged", nothing listed.
    let held = client.request(&CatalogRequest::default()).await.unwrap();
    assert!(!held.releases.is_empty() && !held.unchanged);
    let if_not = |tag: &Option<String>| CatalogRequest {
        if_not: tag.clone(),
        ..Default::default()
    };
    let again = client.request(&if_not(&held.tag)).await.unwrap();
    assert!(held.tag.is_some(), "a stager tags its catalog");
    assert!(again.unchanged && again.releases.is_empty(), "{again:?}");
    assert_eq!(again.tag, held.tag);
    let stale = client
        .request(&if_not(&Some("not-a-tag".into())))
        .await
        .unwrap();
    assert_eq!((stale.unchanged, &stale.releases), (false, &held.releases));

    // stager.yank: unknown release → not-found; then yanked, then "already".
    let yank = |version: &str| YankRequest {
        product: "tool".into(),
        version: version.into(),
    };
    match client.request(&yank("9.9")).await {
        Err(e @ LinkError::Remote { .. }) => {
            assert_eq!(e.refusal_code(), Some(commlink::RefusalCode::NotFound))
        }
        other => panic!("{other:?}"),
    }
    let y = client.request(&yank("1.0")).await.unwrap();
    assert_eq!((y.product.as_str(), y.version.as_str()), ("tool", "1.0"));
    assert!(!y.already);
    assert!(client.request(&yank("1.0")).await.unwrap().already);
    let cat = client.request(&CatalogRequest::default()).await.unwrap();
    assert!(cat.releases.is_empty(), "customers no longer see it");
    // Held since before the yank: no longer the catalog, so it comes in full.
    let after = client.request(&if_not(&held.tag)).await.unwrap();
    assert!(!after.unchanged && after.releases.is_empty(), "{after:?}");
    assert_ne!(after.tag, held.tag);
    let all = client
        .request(&CatalogRequest {
            include_yanked: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.releases[0].yanked);
    assert!(
        client
            .request(&StageRequest {
                product: "tool".into(),
                version: "1.0".into(),
                ..Default::default()
            })
            .await
            .is_err(),
        "a yanked release cannot be staged"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn areas_survive_a_stager_restart() {
    let r = start().await;
    let a = r.stage(&["big.bin", "docs/readme.txt"], None);
    let (code, _) = curl(&[&format!("{}docs/readme.txt", a.https_base)]).await;
    assert_eq!(code, 200);
    // The delivery is on record before the stager stops.
    ffs_testkit::wait::until(std::time::Duration::from_secs(10), || {
        !r.stager
            .deliveries(&DeliveriesRequest::default())
            .deliveries
            .is_empty()
    })
    .await;
    let (dir, cfg) = r.stop().await;

    let r = start_with(dir, cfg, None).await;
    // Same token and credentials, new ports.
    let base = format!("https://127.0.0.1:{}/d/{}/", r.https.port(), a.token);
    let (code, body) = curl(&[&format!("{base}big.bin")]).await;
    assert_eq!(code, 200);
    assert_eq!(sha_hex(&body), a.files[0].sha256);
    let out = ftplib(
        r.ftp,
        &a.ftp_user,
        &a.ftp_password,
        false,
        r#"print("readme", get("docs/readme.txt"))"#,
    )
    .await
    .unwrap();
    assert!(out.contains("read me first"), "{out}");
    assert_eq!(r.stager.areas().areas.len(), 1);
    // The deliveries log continued: seq 1 from before the restart, then 2 and 3.
    ffs_testkit::wait::until(std::time::Duration::from_secs(10), || {
        r.stager
            .deliveries(&DeliveriesRequest::default())
            .deliveries
            .len()
            >= 3
    })
    .await;
    let d = r.stager.deliveries(&DeliveriesRequest::default());
    let seqs: Vec<u64> = d.deliveries.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3], "{:?}", d.deliveries);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_running_sweeper_removes_expired_areas_on_its_own() {
    let (dir, mut cfg) = make_repo();
    cfg.sweep_interval_secs = 1;
    let r = start_with(dir, cfg, None).await;
    let short = r.stage(&["docs/readme.txt"], Some(1));
    let long = r.stage(&["docs/readme.txt"], None);
    let short_dir = r.cfg.areas_dir.join(&short.area_id);
    let long_dir = r.cfg.areas_dir.join(&long.area_id);
    assert!(short_dir.join("docs/readme.txt").is_file());

    // Nobody calls sweep(): the server's own timer must remove the expired area.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while short_dir.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!short_dir.exists(), "expired area still on disk after 10 s");
    let ids: Vec<String> = r
        .stager
        .areas()
        .areas
        .into_iter()
        .map(|a| a.area_id)
        .collect();
    assert!(!ids.contains(&short.area_id), "{ids:?}");
    assert!(ids.contains(&long.area_id), "{ids:?}");
    assert!(long_dir.join("docs/readme.txt").is_file());
    r.stop().await;
}
