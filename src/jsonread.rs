//! Reading a Bot API JSON object field by field, without building a tree:
//! the serde visitor shapes such readers share. `map_visitor!` makes a
//! type deserializable from a JSON object by a loop over its keys;
//! `key_visitor!` makes a key enum from the key's text; `once` fills a
//! field that must not come twice. Used by the hot paths that read what
//! Telegram sends a worker most (`worker::commands`: a message update;
//! `telegram::sent`: sendMessage's answer; `telegram::updates`:
//! getUpdates' answer). It holds no policy: which keys
//! matter and what a malformed object means is the caller's; it must never
//! allocate on its own.

/// `impl Deserialize for $ty` from a JSON object: `$body` runs with the
/// object's `MapAccess` bound to `$map` and returns `Result<$ty, A::Error>`.
macro_rules! map_visitor {
    ($ty:ident, $what:literal, |$map:ident| $body:block) => {
        impl<'de> ::serde::de::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::de::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut $map: A,
                    ) -> Result<$ty, A::Error> {
                        $body
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}
pub(crate) use map_visitor;

/// `impl Deserialize for $ty` from an object's key: `$body` maps the key's
/// text, bound to `$key`, to a `$ty`.
macro_rules! key_visitor {
    ($ty:ident, |$key:ident| $body:expr) => {
        impl<'de> ::serde::de::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::de::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct K;
                impl ::serde::de::Visitor<'_> for K {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str("a key")
                    }
                    fn visit_str<E: ::serde::de::Error>(self, $key: &str) -> Result<$ty, E> {
                        Ok($body)
                    }
                }
                d.deserialize_identifier(K)
            }
        }
    };
}
pub(crate) use key_visitor;

/// Sets `slot` from the next value once; a second time is an error ("KEY
/// twice": serde_json's tree would keep the last, a reader must not guess).
pub fn once<'de, A: serde::de::MapAccess<'de>, T: serde::Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    key: &str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(<A::Error as serde::de::Error>::custom(format_args!(
            "{key} twice"
        )));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}
