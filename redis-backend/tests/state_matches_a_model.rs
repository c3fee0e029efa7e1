//! Random operations on subscriptions (subscribe, unsubscribe, topics, the
//! fan-out at random page sizes, and sessions created, deleted, rotated,
//! put over) against a plain `HashMap` model, on one server: every answer
//! is the model's. One seed drives it and is printed; `STATE_MODEL_SEED`
//! replays it.

mod support;

use std::collections::{BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use session_engine::{Error, SessionId, Timeout, TopicCursor};
use session_redis::{RedisConfig, RedisStore};

const TTL: Timeout = Timeout::from_secs(600);
const TOPICS: [&str; 5] = ["a", "b/{c}", "ü", "s:d", "e e"];
const OPERATIONS: usize = 3_000;

/// Every subscriber of `topic`, paged at `limit`, checking each page.
async fn fan_out(store: &RedisStore, topic: &str, limit: usize) -> BTreeSet<SessionId> {
    let mut all = BTreeSet::new();
    let mut cursor = TopicCursor::START;
    loop {
        let page = store
            .subscribers(topic, cursor, limit)
            .await
            .expect("subscribers");
        assert!(page.ids.len() <= limit);
        for id in page.ids {
            assert!(all.insert(id), "{id} twice");
        }
        match page.next {
            Some(next) => cursor = next,
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_match_a_model() {
    let seed: u64 = std::env::var("STATE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("seed {seed} (replay: STATE_MODEL_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("model")),
    )
    .await
    .expect("connect");
    let mut model: HashMap<SessionId, BTreeSet<String>> = HashMap::new();
    let mut gone: Vec<SessionId> = Vec::new();
    let mut ids: Vec<SessionId> = Vec::new();
    for step in 0..OPERATIONS {
        let topic = TOPICS[rng.random_range(0..TOPICS.len())];
        // Pick a live session most of the time, a gone one sometimes.
        let pick_gone = !gone.is_empty() && (ids.is_empty() || rng.random_range(0..10) == 0);
        let id = if pick_gone {
            gone[rng.random_range(0..gone.len())]
        } else if ids.is_empty() {
            SessionId::random().unwrap()
        } else {
            ids[rng.random_range(0..ids.len())]
        };
        let live = model.contains_key(&id);
        let what = rng.random_range(0..100);
        let context = format!("step {step}, seed {seed}");
        match what {
            0..=9 => {
                let id = store.create(b"", TTL).await.unwrap();
                model.insert(id, BTreeSet::new());
                ids.push(id);
            }
            10..=34 => match store.subscribe(&id, topic).await {
                Ok(new) => assert_eq!(
                    new,
                    model.get_mut(&id).expect(&context).insert(topic.to_owned()),
                    "{context}"
                ),
                Err(Error::NotFound) => assert!(!live, "{context}"),
                Err(e) => panic!("{context}: {e}"),
            },
            35..=49 => match store.unsubscribe(&id, topic).await {
                Ok(was) => assert_eq!(
                    was,
                    model.get_mut(&id).expect(&context).remove(topic),
                    "{context}"
                ),
                Err(Error::NotFound) => assert!(!live, "{context}"),
                Err(e) => panic!("{context}: {e}"),
            },
            50..=59 => match store.topics(&id).await {
                Ok(topics) => {
                    let got: BTreeSet<String> = topics.into_iter().collect();
                    assert_eq!(&got, model.get(&id).expect(&context), "{context}");
                }
                Err(Error::NotFound) => assert!(!live, "{context}"),
                Err(e) => panic!("{context}: {e}"),
            },
            60..=79 => {
                let limit = rng.random_range(1..5);
                let got = fan_out(&store, topic, limit).await;
                let want: BTreeSet<SessionId> = model
                    .iter()
                    .filter(|(_, topics)| topics.contains(topic))
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(got, want, "{context}: {topic} at {limit} a page");
            }
            80..=86 if live => {
                store.delete(&id).await.unwrap();
                model.remove(&id);
                ids.retain(|i| *i != id);
                gone.push(id);
            }
            87..=93 if live => {
                let new = store.rotate(&id).await.unwrap();
                model.remove(&id);
                model.insert(new, BTreeSet::new());
                ids.retain(|i| *i != id);
                ids.push(new);
                gone.push(id);
            }
            _ => {
                // A put: over a live session it keeps the state; over a
                // gone id it starts one afresh.
                store.put(id, b"put", TTL).await.unwrap();
                model.entry(id).or_default();
                if !live {
                    gone.retain(|i| *i != id);
                    ids.push(id);
                }
            }
        }
    }
    // In the end, every topic's index holds no more entries than
    // subscriptions plus the stale ones no fan-out has met since.
    for topic in TOPICS {
        let want: BTreeSet<SessionId> = model
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(fan_out(&store, topic, 1_000).await, want);
        let entries: usize = server
            .cli(&["ZCARD", &store.topic_key(topic)])
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            entries,
            want.len(),
            "a whole listing removed every stale entry of {topic}"
        );
    }
}
