//! Format detection on any first bytes: no panic; qcow2 only with its magic and a
//! version it reads, zstd only with a zstd frame magic, and every refusal names the image.
#![no_main]
use libfuzzer_sys::fuzz_target;
use snapport_core::detect::{detect, ImageFormat, QCOW2_MAGIC};

fuzz_target!(|data: &[u8]| {
    match detect(data, "the image") {
        Ok(ImageFormat::Qcow2) => {
            assert!(
                data.starts_with(QCOW2_MAGIC) && matches!(data[7], 2 | 3) && data[4..7] == [0; 3]
            )
        }
        Ok(ImageFormat::RawZst) => assert!(snapport_core::zst::is_zstd(data)),
        Ok(ImageFormat::Raw) => assert!(!data.starts_with(QCOW2_MAGIC)),
        Err(e) => assert!(e.to_string().starts_with("the image "), "{e}"),
    }
});
