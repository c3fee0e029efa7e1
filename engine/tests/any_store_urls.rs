//! `AnyStore::open` reads the embedded engine's URLs, refuses bad ones with
//! a message that names the problem, and opens what they describe.

use session_engine::{engine_config, AnyStore, Error, SessionStore, Timeout};

#[test]
fn bad_urls_say_what_is_wrong() {
    for (url, says) in [
        ("", "no scheme"),
        ("postgres://db", "unknown scheme"),
        ("memory:/tmp", "takes no path"),
        ("engine:", "needs a data directory"),
        ("engine:/tmp/x?durability=sometimes", "always, never or <n>ms"),
        ("engine:/tmp/x?shards=many", "shards=many"),
        ("engine:/tmp/x?colour=blue", "unknown parameter"),
        ("engine:/tmp/x?durability", "not key=value"),
        ("memory:?durability=always", "only with a data directory"),
        ("engine:/tmp/x?shards=4&shards=8", "given twice"),
        ("engine:/tmp/x?sync=everything", "logs or filesystem"),
        ("memory:?sync=filesystem", "only with a data directory"),
        // Read as meant or refused, never a directory nobody meant.
        ("engine://var/lib/sessions", "names a host"),
        ("engine://localhost/var/lib/sessions", "names a host"),
        ("engine:/var/lib/sessions#old", "fragment"),
        ("engine:~/sessions", "not expanded"),
        ("engine:/var/lib/bad%zzescape", "escape"),
        ("engine:/var/lib/%FF", "UTF-8"),
        // A URL read with its newline, or a space after the colon: another
        // directory, made empty.
        ("engine: /var/lib/sessions", "white space"),
        ("engine:/var/lib/sessions\n", "white space"),
        ("engine:/var/lib/sessions ", "white space"),
        ("engine:/var/lib/ses\tsions", "control character"),
        ("engine:/var/lib/sessions\u{a0}", "white space"),
        ("engine:/var/lib/sessions\u{2028}", "white space"),
        ("engine:/var/lib/ses\u{85}sions", "control character"),
        // A password is hidden even where the scheme is missing or wrong.
        ("user:hunter2@cache:6379", "user:***@cache:6379"),
        // A URL's password is never echoed (a TLS Redis URL the engine
        // does not read, here).
        ("rediss://app:hunter2@cache:6380", "app:***@cache:6380"),
        // Nor in the explanation after the quoted URL.
        ("engine://app:hunter2@cache/dir", "names a host"),
        ("engine://app:hunter2/x@cache/dir", "names a host"),
        ("engine://app:hunter2?x@cache/dir", "names a host"),
        ("engine:/tmp/x?hunter2", "not key=value"),
        // A `~` written as an escape is still a `~`.
        ("engine:%7E/sessions", "not expanded"),
        // The file system's root is nobody's data directory (an empty
        // variable in `engine:/${DIR}`).
        ("engine:/", "root"),
        ("engine:///", "root"),
        // Nor is it when `..` leads there (`Path::parent` of `/..` is `/`:
        // these opened the root as the data directory), and a `..` is
        // refused wherever it stands, written or escaped.
        ("engine:/..", ".."),
        ("engine:/tmp/..", ".."),
        ("engine:%2F%2E%2E", ".."),
        ("engine:/var/lib/../sessions", ".."),
        ("engine:/tmp/x?shards=99999999999999999999999", "too large"),
    ] {
        match engine_config(url) {
            Err(Error::InvalidConfig(why)) => {
                assert!(why.contains(says), "{url}: {why}");
                assert!(!why.contains("hunter2"), "{url}: {why}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    // A scheme is read in any case, as every URL's.
    assert!(engine_config("MEMORY:").is_ok());
    assert!(engine_config("Engine:/tmp/x").is_ok());
    assert!(engine_config("memory:").is_ok());
    assert!(engine_config("memory:?shards=4").is_ok());
    assert!(engine_config("engine:/tmp/x?durability=always&shards=4").is_ok());
    assert!(engine_config("engine:///tmp/x?durability=250ms").is_ok());
    assert!(engine_config("engine:/tmp/x?durability=always&sync=filesystem").is_ok());
    assert!(engine_config("engine:/tmp/x?sync=logs").is_ok());
}

#[test]
fn an_engine_url_opens_a_persistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("engine:{}?durability=always&shards=2", dir.path().display());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let id = rt.block_on(async {
        let store = AnyStore::open(&url).unwrap();
        assert!(format!("{store:?}").starts_with("AnyStore(Engine {"), "{store:?}");
        store.create(b"kept", Timeout::Never).await.unwrap()
    });
    let reopened = AnyStore::open(&url).unwrap();
    let got = rt.block_on(reopened.get(&id)).unwrap();
    assert_eq!(got.metadata(), b"kept");
    drop(reopened);
    // With one `syncfs` a round, the same.
    let url = format!("{url}&sync=filesystem");
    let store = match AnyStore::open(&url) {
        Ok(store) => store,
        // The one file system the scope accepts is ext4 (this machine's).
        Err(Error::InvalidConfig(why)) if why.contains("not ext4") => return,
        Err(other) => panic!("{other}"),
    };
    assert!(format!("{store:?}").contains("FileSystem"), "{store:?}");
    let other = rt.block_on(store.create(b"also kept", Timeout::Never)).unwrap();
    drop(store);
    let reopened = AnyStore::open(&url).unwrap();
    assert_eq!(rt.block_on(reopened.get(&id)).unwrap().metadata(), b"kept");
    assert_eq!(
        rt.block_on(reopened.get(&other)).unwrap().metadata(),
        b"also kept"
    );
}

/// A path's percent-escapes are decoded (a space, `?` or `#` in a
/// directory's name can only be written so), and `engine:///<path>` is
/// `engine:/<path>`.
#[test]
fn an_engine_urls_path_is_decoded() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("my sessions?#1");
    let encoded = format!("{}/my%20sessions%3F%231", parent.path().display());
    for url in [format!("engine:{encoded}"), format!("engine://{encoded}")] {
        let store = AnyStore::open(&url).unwrap();
        drop(store);
        assert!(dir.is_dir(), "{url} made no {dir:?}");
    }
    let entries: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "one directory, the decoded one: {entries:?}");
}
