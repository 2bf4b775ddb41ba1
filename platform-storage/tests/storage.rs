//! Roots, atomic writes and the blob store on a real file system.

use std::path::PathBuf;

use bytes::Bytes;
use platform_storage::blobs::{BlobError, BlobId, BlobStore};
use platform_storage::root::check_relative;
use platform_storage::{FilesRoot, Root};

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(platform_test_support::unique_name("storage"));
    std::fs::create_dir_all(&dir).expect("creates");
    dir
}

#[test]
fn only_plain_relative_paths_are_accepted() {
    for good in ["a", "a/b.txt", "files/blobs/ab/cd/x", "with space.png", "ünï.txt"] {
        assert!(check_relative(good).is_ok(), "{good}");
    }
    for (bad, why) in [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x", ".."),
        ("a/../../x", ".."),
        ("a/./b", "."),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("a\\..\\b", "backslash"),
        ("a\0b", "NUL"),
        (".git/config", "hidden"),
        ("a/.env", "hidden"),
    ] {
        let error = check_relative(bad).expect_err(bad).to_string();
        assert!(error.contains("refused path"), "{bad} ({why}): {error}");
    }
}

#[test]
fn symlinks_out_of_the_root_do_not_open_and_inside_ones_do() -> anyhow::Result<()> {
    let dir = scratch();
    std::fs::create_dir_all(dir.join("root/a"))?;
    std::fs::write(dir.join("root/a/file"), "inside")?;
    std::fs::write(dir.join("secret"), "outside")?;
    std::os::unix::fs::symlink("../secret", dir.join("root/out"))?;
    std::os::unix::fs::symlink("/etc", dir.join("root/etc"))?;
    std::os::unix::fs::symlink("a/file", dir.join("root/in"))?;
    let root = Root::open(dir.join("root"))?;
    for escaping in ["out", "etc/passwd", "etc"] {
        let error = root.open_file(escaping).expect_err(escaping);
        assert!(error.is_not_found(), "{escaping}: {error}");
    }
    let (mut file, metadata) = root.open_file("in")?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)?;
    assert_eq!((text.as_str(), metadata.len()), ("inside", 6));
    assert!(root.open_file("a").expect_err("a directory").is_not_found());
    assert!(root.metadata("a")?.is_dir());
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[test]
fn atomic_writes_replace_whole_files_and_leave_no_temporaries() -> anyhow::Result<()> {
    let dir = scratch();
    let root = Root::open(&dir)?;
    root.write_atomic("deep/er/file.txt", b"first")?;
    root.write_atomic("deep/er/file.txt", b"second, longer")?;
    assert_eq!(std::fs::read_to_string(dir.join("deep/er/file.txt"))?, "second, longer");
    let names: Vec<String> = std::fs::read_dir(dir.join("deep/er"))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, ["file.txt"], "no temporary file left");
    assert!(root.write_atomic("../escape", b"x").is_err());
    assert!(!dir.parent().expect("has a parent").join("escape").exists());
    // A symlinked directory that leads out of the root is not written through.
    std::os::unix::fs::symlink(std::env::temp_dir(), dir.join("tmp-link"))?;
    assert!(root.write_atomic("tmp-link/planted", b"x").is_err());
    assert!(!std::env::temp_dir().join("planted").exists());
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[tokio::test]
async fn streamed_blobs_are_deduplicated_and_oversized_ones_leave_nothing() -> anyhow::Result<()> {
    let dir = scratch();
    let files = FilesRoot::open(&dir)?;
    let store = BlobStore::new(files.root().clone());
    let chunks = || {
        futures_util::stream::iter(
            ["con", "tent"]
                .map(|part| Ok::<_, std::io::Error>(Bytes::from_static(part.as_bytes()))),
        )
    };
    let stored = store.put_stream(chunks(), 100).await?;
    assert_eq!(stored.id, BlobId::of(b"content"));
    assert_eq!((stored.size, stored.created), (7, true));
    assert!(!store.put_stream(chunks(), 100).await?.created, "stored once");
    assert_eq!(std::fs::read(dir.join(stored.id.relative_path()))?, b"content");

    let error = store.put_stream(chunks(), 5).await.expect_err("over the limit");
    assert!(matches!(error, BlobError::TooLarge { limit: 5 }), "{error}");
    let staged = std::fs::read_dir(files.staging_dir()?)?.count();
    assert_eq!(staged, 0, "nothing left behind");
    assert!("not-hex".parse::<BlobId>().is_err());
    assert_eq!(stored.id.as_str().parse::<BlobId>()?, stored.id);
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
