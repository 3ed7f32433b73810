//! age encryption of exports and decryption on upload. Oracles: Debian's `age` and
//! `age-keygen` (decrypt every encrypted format, make the keys), `ssh-keygen`, qemu-img
//! (compare), zstd, cmp, sha256sum -c; and the pool's own files for "nothing imported".

mod common;
use common::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A home with `vd/src`, a 24 MiB qcow2 disk with data in three places, and an age
/// identity `key.txt` (age-keygen) with its recipient.
struct Lab {
    home: Home,
    img: PathBuf,
    key: PathBuf,
    recipient: String,
}

fn lab() -> Lab {
    let home = Home::new();
    let img = src_disk(&home);
    let (key, recipient) = age_key(&home, "key.txt");
    Lab {
        home,
        img,
        key,
        recipient,
    }
}

/// A new age identity file `name` in the home's folder, and its recipient.
fn age_key(home: &Home, name: &str) -> (PathBuf, String) {
    let key = home.path().join(name);
    tool("age-keygen", &["-o", p(&key)]);
    let recipient = tool("age-keygen", &["-y", p(&key)]).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (key, recipient)
}

/// `age -d -i KEY -o OUT IN` (Debian's age).
fn age_decrypt(key: &Path, input: &Path, out: &Path) {
    tool("age", &["-d", "-i", p(key), "-o", p(out), p(input)]);
}

/// Every file of `dir` whose bytes contain `needle` (as text).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    hits.sort();
    hits
}

#[test]
fn encrypted_exports_decrypt_with_stock_age_and_leave_no_digest_in_clear() {
    let Lab {
        home,
        img,
        key,
        recipient,
    } = lab();
    // The image in clear, for comparison and for the digests that must not leak.
    let plain_dir = home.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = plain_dir.join("src.raw");
    home.ok(&["download", "vd/src", "-q", "--sha256sum", "-o", p(&plain)]);
    let digest = sidecar_digest(&plain);
    let hex = digest.split(':').nth(1).unwrap().to_string();
    let plain_sha = tool("sha256sum", &[p(&plain)])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    for format in ["raw", "qcow2", "raw.zst"] {
        let out = home.out(&format!("src.{format}.age"));
        home.ok(&[
            "download",
            "vd/src",
            "-q",
            "--format",
            format,
            "--sha256sum",
            "--encrypt-to",
            &recipient,
            "-o",
            p(&out),
        ]);
        let head = std::fs::read(&out).unwrap();
        assert!(head.starts_with(b"age-encryption.org/v1\n"), "{format}");
        // sha256sum -c checks the encrypted file; Debian's age decrypts it.
        sha256sum_check(&out);
        let dec = home.out(&format!("dec.{format}"));
        age_decrypt(&key, &out, &dec);
        same_image(format, &dec, &plain, &home.out("dec.zst.raw"));
        std::fs::remove_file(&dec).unwrap();
        // The content digest is beside it only encrypted, and decrypts to the digest.
        assert!(!home.out(&format!("src.{format}.age.digest")).exists());
        let sealed = home.out(&format!("src.{format}.age.digest.age"));
        let opened = home.out("digest.txt");
        age_decrypt(&key, &sealed, &opened);
        let text = std::fs::read_to_string(&opened).unwrap();
        assert!(
            text.starts_with(&format!("{digest}  src.{format}.age")),
            "{text}"
        );
        std::fs::remove_file(&opened).unwrap();
    }
    // Nothing derived from the plaintext is in clear anywhere beside the exports.
    let out_dir = home.path().join("out");
    assert_eq!(files_containing(&out_dir, &hex), Vec::<String>::new());
    assert_eq!(files_containing(&out_dir, &plain_sha), Vec::<String>::new());
    // ... while the oracle works: the clear export's sidecars do hold them.
    assert!(!files_containing(&plain_dir, &hex).is_empty());
    // The JSON report does not carry the content digest in clear either.
    let out = home.out("json.raw.age");
    let r = home.ok(&[
        "download",
        "vd/src",
        "--encrypt-to",
        &recipient,
        "-o",
        p(&out),
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(doc["encrypted"], true);
    assert!(doc["content_digest"].is_null(), "{doc}");
    let _ = img;
}

#[test]
fn ssh_recipients_files_and_stdout_all_decrypt() {
    let Lab {
        home,
        key,
        recipient,
        ..
    } = lab();
    let plain = home.out("src.raw");
    home.ok(&["download", "vd/src", "-q", "-o", p(&plain)]);
    let ssh = home.path().join("id_ed25519");
    tool(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", p(&ssh)],
    );
    let ssh_pub = std::fs::read_to_string(home.path().join("id_ed25519.pub")).unwrap();
    // A recipients file with a comment, a blank line, an age key and an ssh key.
    let list = home.path().join("recipients.txt");
    std::fs::write(
        &list,
        format!("# backup keys\n\n{recipient}\n{}\n", ssh_pub.trim()),
    )
    .unwrap();
    let both = home.out("both.raw.age");
    home.ok(&[
        "download",
        "vd/src",
        "-q",
        "--encrypt-to-file",
        p(&list),
        "-o",
        p(&both),
    ]);
    for identity in [&key, &ssh] {
        let dec = home.out("dec.raw");
        age_decrypt(identity, &both, &dec);
        tool("cmp", &[p(&dec), p(&plain)]);
        std::fs::remove_file(&dec).unwrap();
    }
    // To stdout, to the ssh key given on the command line.
    let piped = home.out("piped.raw.age");
    let out = home.ok(&[
        "download",
        "vd/src",
        "-q",
        "--encrypt-to",
        ssh_pub.trim(),
        "-o",
        "-",
    ]);
    std::fs::write(&piped, &out.stdout).unwrap();
    let dec = home.out("dec.raw");
    age_decrypt(&ssh, &piped, &dec);
    tool("cmp", &[p(&dec), p(&plain)]);
    // And snapport reads it back with the ssh key.
    home.ok(&[
        "upload",
        p(&piped),
        "vd/fromssh",
        "-q",
        "--identity",
        p(&ssh),
    ]);
    tool(
        "qemu-img",
        &[
            "compare",
            "-F",
            "raw",
            p(&home.pool().join("fromssh.qcow2")),
            p(&plain),
        ],
    );
    // Bad recipients: one line each, nothing written.
    for bad in ["age1notakey", "ssh-ed25519 AAAAnot", "bob@example.com"] {
        let out = home.out("bad.raw");
        let err = home.fails(&["download", "vd/src", "--encrypt-to", bad, "-o", p(&out)]);
        assert!(
            err.contains("recipient") || err.contains("public key"),
            "{err}"
        );
        assert!(!out.exists());
    }
    let empty = home.path().join("empty.txt");
    std::fs::write(&empty, "# nobody\n").unwrap();
    let err = home.fails(&[
        "download",
        "vd/src",
        "--encrypt-to-file",
        p(&empty),
        "-o",
        p(&home.out("none.raw")),
    ]);
    assert!(err.contains("names no recipient"), "{err}");
}

#[test]
fn encrypted_uploads_verify_and_wrong_keys_leave_nothing() {
    let Lab {
        home,
        img,
        key,
        recipient,
    } = lab();
    let mut exports = Vec::new();
    for format in ["raw", "raw.zst", "qcow2"] {
        let out = home.out(&format!("src.{format}.age"));
        home.ok(&[
            "download",
            "vd/src",
            "-q",
            "--format",
            format,
            "--sha256sum",
            "--encrypt-to",
            &recipient,
            "-o",
            p(&out),
        ]);
        exports.push(out);
    }
    let (raw, zst, qcow2) = (&exports[0], &exports[1], &exports[2]);
    let before = files_in(&home.pool());
    // Round trips, verified by the encrypted digest sidecar and the ciphertext's SHA-256.
    // A qcow2 is decrypted into a private folder first (it is read at random); the
    // folder goes with the import.
    for (src, name) in [(raw, "fromraw"), (zst, "fromzst"), (qcow2, "fromqcow2")] {
        let r = home.ok(&[
            "upload",
            p(src),
            &format!("vd/{name}"),
            "--identity",
            p(&key),
            "--json",
        ]);
        let doc: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        let verified = doc["verified"].to_string();
        assert!(verified.contains(".digest.age"), "{verified}");
        assert!(
            verified.contains("sha256 of the encrypted source"),
            "{verified}"
        );
        let made = home.pool().join(format!("{name}.qcow2"));
        tool("qemu-img", &["compare", p(&img), p(&made)]);
        home.ok(&["delete", &format!("vd/{name}"), "-q"]);
    }
    // From stdin, with the digest given.
    let digest = {
        let plain = home.out("plain.raw");
        home.ok(&["download", "vd/src", "-q", "-o", p(&plain)]);
        sidecar_digest(&plain)
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapport"))
        .env("SNAPPORT_HOME", home.path())
        .args(["upload", "-", "vd/piped", "-q", "--identity", p(&key)])
        .args(["--digest", &digest])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(zst).unwrap())
        .unwrap();
    assert!(child.wait().unwrap().success());
    tool(
        "qemu-img",
        &["compare", p(&img), p(&home.pool().join("piped.qcow2"))],
    );
    home.ok(&["delete", "vd/piped", "-q"]);
    // ASCII-armored, as `age -a` writes it (here around the clear raw.zst export).
    let clear = home.out("clear.raw.zst");
    home.ok(&[
        "download",
        "vd/src",
        "-q",
        "--format",
        "raw.zst",
        "-o",
        p(&clear),
    ]);
    let armored = home.out("armored.raw.zst.age");
    tool(
        "age",
        &["-a", "-r", &recipient, "-o", p(&armored), p(&clear)],
    );
    assert!(std::fs::read(&armored)
        .unwrap()
        .starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    home.ok(&[
        "upload",
        p(&armored),
        "vd/armored",
        "-q",
        "--identity",
        p(&key),
        "--digest",
        &digest,
    ]);
    tool(
        "qemu-img",
        &["compare", p(&img), p(&home.pool().join("armored.qcow2"))],
    );
    home.ok(&["delete", "vd/armored", "-q"]);
    assert_eq!(files_in(&home.pool()), before);

    // Every refusal: one line, and the pool as it was.
    age_key(&home, "other.txt");
    let refusals: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["upload".into(), p(raw).into(), "vd/x".into()],
            "give --identity",
        ),
        (
            vec![
                "upload".into(),
                p(raw).into(),
                "vd/x".into(),
                "--identity".into(),
                p(&home.path().join("other.txt")).into(),
            ],
            "encrypted to other keys",
        ),
        (
            vec![
                "upload".into(),
                p(raw).into(),
                "vd/x".into(),
                "--identity".into(),
                p(&key).into(),
                "--digest".into(),
                format!("{}0", &digest[..digest.len() - 1]),
            ],
            "mismatch",
        ),
        (
            vec![
                "upload".into(),
                p(raw).into(),
                "vd/x".into(),
                "--identity".into(),
                p(&home.path().join("missing.txt")).into(),
            ],
            "missing.txt",
        ),
    ];
    for (args, expect) in &refusals {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = home.fails(&args);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(files_in(&home.pool()), before, "{args:?}");
    }
    // A damaged ciphertext (one byte in the middle) or a changed .sha256: refused.
    let damaged = home.out("damaged.raw.age");
    std::fs::copy(raw, &damaged).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&damaged)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len / 2).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], len / 2).unwrap();
    let err = home.fails(&[
        "upload",
        p(&damaged),
        "vd/x",
        "--identity",
        p(&key),
        "--no-sidecars",
    ]);
    assert!(err.contains("damaged or cut short"), "{err}");
    assert_eq!(files_in(&home.pool()), before);
    // Cut short (half of it): age's final chunk is missing, refused the same way.
    let cut = home.out("cut.raw.age");
    let bytes = std::fs::read(raw).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = home.fails(&[
        "upload",
        p(&cut),
        "vd/x",
        "--identity",
        p(&key),
        "--no-sidecars",
    ]);
    assert!(err.contains("damaged or cut short"), "{err}");
    assert_eq!(files_in(&home.pool()), before);
    let sums = home.out("src.raw.age.sha256");
    let text = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(&sums, format!("{}{}", "0".repeat(64), &text[64..])).unwrap();
    let err = home.fails(&["upload", p(raw), "vd/x", "--identity", p(&key)]);
    assert!(err.contains("the encrypted source hashes to"), "{err}");
    assert_eq!(files_in(&home.pool()), before);
}

#[test]
fn encrypted_bundles_and_deltas_decrypt_with_stock_age_and_upload_with_the_identity() {
    let Lab {
        home,
        img,
        key,
        recipient,
    } = lab();
    // A temporary folder of its own: the private copies (a decrypted delta) must be gone.
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut home = home;
    home.env = vec![("TMPDIR".into(), p(&tmp).into())];
    let bare = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // A delta between two snapshots of vd/src, encrypted.
    home.ok(&["snapshot", "create", "vd/src", "--name", "s1", "-q"]);
    qemu_io(&img, "qcow2", &["write -P 0x77 2m 3m", "write -z 20m 1m"]);
    home.ok(&["snapshot", "create", "vd/src", "--name", "s2", "-q"]);
    let delta = home.out("s2.delta.age");
    let doc = bare(&home.ok(&[
        "download",
        "vds/src@s2",
        "--since",
        "vds/src@s1",
        "--encrypt-to",
        &recipient,
        "-o",
        p(&delta),
        "-q",
        "--json",
    ]));
    assert_eq!(doc["encrypted"], true);
    // Nothing derived from the plaintext in the report: no digest, the ciphertext's hash.
    assert!(
        doc.get("target_digest").is_none() && doc.get("base_digest").is_none(),
        "{doc}"
    );
    let cipher_sha = tool("sha256sum", &[p(&delta)]);
    assert_eq!(doc["sha256"], cipher_sha.split_whitespace().next().unwrap());
    assert!(std::fs::read(&delta)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n"));
    // Stock age gives back a delta that applies as it is; --identity applies it directly.
    let plain_delta = home.out("s2.delta");
    age_decrypt(&key, &delta, &plain_delta);
    let s2 = home.out("s2.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "-l",
            "snapshot.name=s2",
            "-O",
            "raw",
            p(&img),
            p(&s2),
        ],
    );
    home.ok(&[
        "upload",
        p(&plain_delta),
        "vd/r1",
        "--onto",
        "vds/src@s1",
        "-q",
    ]);
    tool(
        "qemu-img",
        &[
            "compare",
            "-F",
            "raw",
            p(&home.pool().join("r1.qcow2")),
            p(&s2),
        ],
    );
    let err = home.fails(&["upload", p(&delta), "vd/r2", "--onto", "vds/src@s1"]);
    assert!(err.contains("give --identity"), "{err}");
    home.ok(&[
        "upload",
        p(&delta),
        "vd/r2",
        "--onto",
        "vds/src@s1",
        "--identity",
        p(&key),
        "-q",
    ]);
    tool(
        "qemu-img",
        &[
            "compare",
            "-F",
            "raw",
            p(&home.pool().join("r2.qcow2")),
            p(&s2),
        ],
    );
    assert!(
        files_in(&tmp).is_empty(),
        "left in TMPDIR: {:?}",
        files_in(&tmp)
    );

    // A VM bundle, encrypted: stock age and tar read it; it imports with --identity.
    let cfg = home.out("web.json");
    std::fs::write(&cfg, r#"{"name":"web","disks":[{"name":"src"}]}"#).unwrap();
    home.ok(&["create", "vm/web", "--config", p(&cfg), "-q"]);
    let tar_age = home.out("web.tar.age");
    let doc = bare(&home.ok(&[
        "download",
        "vm/web",
        "--encrypt-to",
        &recipient,
        "-o",
        p(&tar_age),
        "-q",
        "--json",
    ]));
    assert_eq!(doc["encrypted"], true);
    assert_eq!(
        doc["output_size"],
        std::fs::metadata(&tar_age).unwrap().len()
    );
    let tar = home.out("web.tar");
    age_decrypt(&key, &tar_age, &tar);
    let dir = home.out("x");
    unpack_checked_bundle(&tar, &dir);
    // No digest of the plaintext in the report: not the disk's content digest, not a
    // SHA-256 that SHA256SUMS lists, not the tar's.
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let tar_sha = tool("sha256sum", &[p(&tar)]);
    let report = doc.to_string();
    assert!(
        !report.contains("sha256-64k-4m:"),
        "a digest in clear: {report}"
    );
    for hex in sums
        .lines()
        .chain([tar_sha.as_str()])
        .filter_map(|l| l.split_whitespace().next())
    {
        assert!(!report.contains(hex), "{hex} in clear: {report}");
    }
    let err = home.fails(&["upload", p(&tar_age), "vm/copy"]);
    assert!(err.contains("give --identity"), "{err}");
    home.ok(&[
        "upload",
        p(&tar_age),
        "vm/copy",
        "--identity",
        p(&key),
        "-q",
    ]);
    tool(
        "qemu-img",
        &["compare", p(&home.pool().join("copy-src.qcow2")), p(&img)],
    );
    // Nothing beside the encrypted files but what they are.
    assert!(!home.out("web.tar.age.digest").exists());
}
