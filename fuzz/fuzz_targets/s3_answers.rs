//! What snapport reads from an S3 server or the user's AWS files, on any bytes: the XML
//! answers (an error's code and message, a page of unfinished uploads), `s3://` names
//! and the shared config/credentials files. No panic; what comes out is made of what
//! went in (no text longer than the input); a name that parses prints back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapport_s3::{settings, xml, ObjectPath};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            if let Some((code, message)) = xml::error(&text) {
                assert!(code.len() + message.map_or(0, |m| m.len()) <= text.len());
            }
            if let Some(page) = xml::uploads_page(&text) {
                for (key, id) in page.uploads {
                    assert!(key.len() + id.len() <= text.len());
                }
            }
        }
        1 => {
            if let Ok(object) = ObjectPath::parse(&text) {
                assert_eq!(ObjectPath::parse(&object.to_string()).unwrap(), object);
                assert!(!object.key.is_empty() && object.key.len() <= 1024);
            }
        }
        _ => {
            for (name, profile) in settings::parse_ini(&text) {
                assert!(name.len() <= text.len());
                for (k, v) in profile {
                    assert!(k.len() + v.len() <= text.len() + 1);
                }
            }
        }
    }
});
