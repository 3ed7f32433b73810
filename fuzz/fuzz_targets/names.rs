//! The name rule on any string: no panic, and every name it accepts is one plain path
//! component (joined to a folder, it stays in that folder and is not hidden), has no
//! control character, and cannot split a `DISK@SNAPSHOT` address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if snapport_core::name::check("fuzz", name).is_ok() {
        let parts: Vec<_> = Path::new(name).components().collect();
        assert_eq!(parts, [Component::Normal(name.as_ref())], "{name:?}");
        let joined = Path::new("/pool").join(name);
        assert_eq!(joined.parent(), Some(Path::new("/pool")), "{name:?}");
        assert!(!name.starts_with(['.', '-']) && !name.contains(['@', '/']));
        assert!(!name.chars().any(char::is_control) && name.len() <= 200);
    }
    // A suffix makes a valid name of a valid one or is refused; never a path.
    if snapport_core::name::check_fragment("fuzz", name).is_ok() {
        let made = format!("disk{name}");
        if snapport_core::name::check("fuzz", &made).is_ok() {
            assert_eq!(Path::new(&made).components().count(), 1, "{made:?}");
        }
        assert!(!name.contains('/') && !name.contains(".."));
    }
});
