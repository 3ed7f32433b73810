//! The few things read out of S3's XML answers: an error's code and message, and the
//! unfinished uploads of a key. Untrusted bytes (the server, or whatever answers in its
//! place: a proxy's HTML page): nothing here panics or allocates beyond the input's size,
//! and anything unexpected reads as absent (fuzz target `s3_answers`).

/// The text of the first `<tag>...</tag>` in `xml` that holds text only, entities
/// decoded.
pub fn element(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).next()
}

/// The texts of every `<tag>...</tag>` in `xml`, in order. Attributes on the opening
/// tag (`<Key xmlns="...">`) are allowed; nested elements of the same name are not a
/// thing S3 sends. Every element read this way holds text only (S3 escapes a `<` in a
/// key or message), so one whose body has markup is skipped: with a closing tag broken
/// (`</Co de>`) it would run on into the next elements and hand back their markup.
pub fn elements<'a>(xml: &'a str, tag: &'a str) -> impl Iterator<Item = String> + 'a {
    raw_elements(xml, tag)
        .filter(|body| !body.contains('<'))
        .map(unescape)
}

/// As [`elements`], the texts as written (entities not decoded): for an element that
/// holds others, read again with [`element`].
fn raw_elements<'a>(xml: &'a str, tag: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || loop {
        let at = rest.find('<')?;
        rest = &rest[at + 1..];
        let Some(after) = rest.strip_prefix(tag) else {
            continue;
        };
        // An opening tag ends within a few attributes; a '>' far away is not its end
        // (and looking for it to the end at every '<' would be quadratic).
        let Some(gt) = after.bytes().take(1024).position(|b| b == b'>') else {
            continue;
        };
        let attrs = &after[..gt];
        if !(attrs.is_empty() || attrs.starts_with([' ', '\t', '\n', '\r', '/'])) {
            // `<KeyMarker>` when looking for `<Key>`.
            continue;
        }
        if attrs.ends_with('/') {
            rest = &after[gt + 1..];
            return Some("");
        }
        let body = &after[gt + 1..];
        let Some(end) = body.find(&close) else {
            rest = "";
            return None;
        };
        rest = &body[end + close.len()..];
        return Some(&body[..end]);
    })
}

/// Decodes the five named entities and numeric character references; an entity that is
/// none of these stays as written.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Entities are short: only the next 13 bytes are looked at for the ';'.
        let semi = rest.bytes().take(13).position(|b| b == b';');
        let decoded = semi.and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => name
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// An error answer's `Code` and `Message` (`NoSuchKey`, `The specified key does not
/// exist.`), if the body is one.
pub fn error(body: &str) -> Option<(String, Option<String>)> {
    let at = body.find("<Error")?;
    let err = &body[at..];
    Some((element(err, "Code")?, element(err, "Message")))
}

/// A page of ListMultipartUploads: the (key, upload id) of each unfinished upload, and
/// the markers of the next page when the list is truncated.
pub struct UploadsPage {
    pub uploads: Vec<(String, String)>,
    pub next: Option<(String, String)>,
}

/// Reads a ListMultipartUploadsResult; `None` if the body is not one.
pub fn uploads_page(body: &str) -> Option<UploadsPage> {
    body.find("<ListMultipartUploadsResult")?;
    let mut uploads = Vec::new();
    for upload in raw_elements(body, "Upload") {
        if let (Some(key), Some(id)) = (element(upload, "Key"), element(upload, "UploadId")) {
            uploads.push((key, id));
        }
    }
    let truncated = element(body, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = truncated
        .then(|| {
            Some((
                element(body, "NextKeyMarker")?,
                element(body, "NextUploadIdMarker")?,
            ))
        })
        .flatten();
    Some(UploadsPage { uploads, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_bodies() {
        // As AWS documents it (no namespace).
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The resource you requested does not exist</Message><Resource>/mybucket/myfoto.jpg</Resource><RequestId>4442587FB7D0A2F9</RequestId></Error>"#;
        let (code, msg) = error(body).unwrap();
        assert_eq!(code, "NoSuchKey");
        assert_eq!(msg.unwrap(), "The resource you requested does not exist");
        assert!(error("<html><body>502 Bad Gateway</body></html>").is_none());
        assert!(error("<Error><Code>X").is_none());
    }

    #[test]
    fn list_multipart_uploads_page() {
        // AWS's documented example, one key escaped.
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bucket</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <MaxUploads>3</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>my-divisor</Key>
    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
    <Initiator><ID>arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de</ID><DisplayName>user1-11111a31-17b5-4fb7-9df5-b111111f13de</DisplayName></Initiator>
    <StorageClass>STANDARD</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>a &amp;lt; b&lt;1&gt;</Key>
    <UploadId>VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
  </Upload>
</ListMultipartUploadsResult>"#;
        let page = uploads_page(body).unwrap();
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].0, "my-divisor");
        assert_eq!(page.uploads[1].0, "a &lt; b<1>");
        assert_eq!(page.next.unwrap().0, "my-movie.m2ts");
        assert!(uploads_page("<Error><Code>NotImplemented</Code></Error>").is_none());
    }

    #[test]
    fn entities() {
        assert_eq!(unescape("a&#65;&#x42;&amp;&bogus;&"), "aAB&&bogus;&");
        assert_eq!(unescape("&#xD800;"), "&#xD800;");
        assert_eq!(
            element("<KeyMarker>x</KeyMarker><Key a=\"1\">y</Key>", "Key").unwrap(),
            "y"
        );
        assert_eq!(element("<Key/>", "Key").unwrap(), "");
        // A broken closing tag: the Code does not run on into the Message and the next
        // Code (the fuzz target found a code and a message that overlapped); there is
        // then no readable code.
        let broken = "<Error><Code>NoSuchKey</Co\tde><Message>gone &amp; away</Message><Code>N</Code></Error>";
        assert_eq!(error(broken), None);
        assert_eq!(element(broken, "Message").unwrap(), "gone & away");
    }
}
