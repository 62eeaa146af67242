//! Reading JSON into serde types strictly, with errors a plugin author can act on: each names
//! the JSON path of the value at fault (`readings[2].value`) and says what was expected and
//! what was found, in one short line whatever the input.
//!
//! serde's derived errors come close but not all the way: a wrong type reads `invalid type:
//! string "...", expected f64` with the whole offending value quoted, an unknown key is quoted
//! whole too, `null` passes for an absent `Option`, and a struct is also filled from an array
//! by position. So every value is read through one visitor, [`Strict`], driven by the
//! [`Shape`] of the type it reads, and `serde_path_to_error` records where it was.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Number, Value};
use serde_path_to_error::{Segment, Track};

/// Reads a `T` from `doc`; the error is `(path, problem)`, `$` being the whole document.
pub fn read<'de, T: Shape<'de>>(doc: &'de Value) -> Result<T, (String, String)> {
    let mut track = Track::new();
    Strict::<T>::new()
        .deserialize(serde_path_to_error::Deserializer::new(doc, &mut track))
        .map_err(|e| (shown_path(&track.path()), e.to_string()))
}

/// How one schema type is read from the JSON kind it takes; every other kind is "expected
/// [`Shape::EXPECTED`], found <kind>". serde's own wording ("invalid type: string "..."")
/// would quote the whole offending value, however long.
pub trait Shape<'de>: Sized {
    const EXPECTED: &'static str;

    fn boolean<E: de::Error>(_: bool) -> Result<Self, E> {
        wrong::<Self, E>("a boolean")
    }
    fn number<E: de::Error>(_: Number) -> Result<Self, E> {
        wrong::<Self, E>("a number")
    }
    fn string<E: de::Error>(_: &str) -> Result<Self, E> {
        wrong::<Self, E>("a string")
    }
    fn array<A: SeqAccess<'de>>(_: A) -> Result<Self, A::Error> {
        wrong::<Self, A::Error>("an array")
    }
    fn object<A: MapAccess<'de>>(_: A) -> Result<Self, A::Error> {
        wrong::<Self, A::Error>("an object")
    }
}

pub fn wrong<'de, T: Shape<'de>, E: de::Error>(found: &str) -> Result<T, E> {
    Err(E::custom(format_args!(
        "expected {}, found {found}",
        T::EXPECTED
    )))
}

/// Reads a `T` from any JSON value (the seed and visitor in one).
pub struct Strict<T>(PhantomData<T>);

impl<T> Strict<T> {
    pub fn new() -> Self {
        Strict(PhantomData)
    }
}

impl<'de, T: Shape<'de>> DeserializeSeed<'de> for Strict<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Shape<'de>> Visitor<'de> for Strict<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        wrong::<T, E>("null")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<T, E> {
        T::boolean(b)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        T::number(n.into())
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        T::number(n.into())
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<T, E> {
        // JSON has no NaN or infinity and serde_json refuses numbers out of f64 range; this
        // keeps the guarantee independent of the parser's settings.
        match Number::from_f64(x) {
            Some(n) => T::number(n),
            None => Err(E::custom(format_args!(
                "expected a finite number, found {x}"
            ))),
        }
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        T::string(s)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::array(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::object(map)
    }
}

/// A key's value if the key is there. Not `Option`, which reads `null` as absent.
pub struct Given<T>(pub Option<T>);

impl<T> Default for Given<T> {
    fn default() -> Self {
        Given(None)
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Given<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Strict::<T>::new().deserialize(d).map(|v| Given(Some(v)))
    }
}

impl<'de> Shape<'de> for bool {
    const EXPECTED: &'static str = "true or false";
    fn boolean<E: de::Error>(b: bool) -> Result<Self, E> {
        Ok(b)
    }
}

impl<'de> Shape<'de> for f64 {
    const EXPECTED: &'static str = "a number";
    fn number<E: de::Error>(n: Number) -> Result<Self, E> {
        n.as_f64()
            .map_or_else(|| wrong::<Self, E>("a number out of range"), Ok)
    }
}

impl<'de> Shape<'de> for String {
    const EXPECTED: &'static str = "a string";
    fn string<E: de::Error>(s: &str) -> Result<Self, E> {
        Ok(s.to_string())
    }
}

impl<'de, T: Shape<'de>> Shape<'de> for Vec<T> {
    const EXPECTED: &'static str = "an array";
    fn array<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element_seed(Strict::<T>::new())? {
            items.push(item);
        }
        Ok(items)
    }
}

/// A derived struct read from a JSON object only: serde would also fill a struct from an
/// array, by position, so `[1]` would pass as `{"version": 1}`.
pub struct Object<S>(pub S);

impl<'de, S: Deserialize<'de>> Shape<'de> for Object<S> {
    const EXPECTED: &'static str = "an object";
    fn object<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        S::deserialize(MapAccessDeserializer::new(KnownKeys(map))).map(Object)
    }
}

/// An object's entries, with each key checked against the struct's own list before serde sees
/// it: the error is then recorded at the key's path and names the keys expected, where serde's
/// would sit on the object and quote the unknown key whole.
struct KnownKeys<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for KnownKeys<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(KeySeed(seed))
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

struct KeySeed<K>(K);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = K::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K::Value, D::Error> {
        let key = String::deserialize(d)?;
        self.0
            .deserialize(StrDeserializer::<UnknownKey>::new(&key))
            .map_err(|UnknownKey(expected)| {
                de::Error::custom(format_args!(
                    "unknown key (expected one of {})",
                    expected.join(", ")
                ))
            })
    }
}

/// The only error a derived struct's key reader makes under `deny_unknown_fields`: the keys
/// it knows.
#[derive(Debug)]
struct UnknownKey(&'static [&'static str]);

impl de::Error for UnknownKey {
    fn custom<T: fmt::Display>(_: T) -> Self {
        UnknownKey(&[])
    }
    fn unknown_field(_: &str, expected: &'static [&'static str]) -> Self {
        UnknownKey(expected)
    }
}

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "unknown key (expected one of {})", self.0.join(", "))
    }
}

impl std::error::Error for UnknownKey {}

// ---- paths and quotes in messages ----

/// Quotes a string from the input for an error message, cut so an error stays one short line.
pub fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 40;
    if s.chars().count() > MAX_CHARS {
        format!("{:?}...", s.chars().take(MAX_CHARS).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

/// `readings[3].quantity`. A key that is empty, long or not a plain name is shown quoted
/// (`$[""]`, `readings[0]["a b"]`, at most 40 characters of it), so the path always shows which
/// key (an empty key made an empty path, found by fuzzing) and stays short.
fn shown_path(path: &serde_path_to_error::Path) -> String {
    let mut shown = String::from("$");
    for segment in path {
        let key = match segment {
            Segment::Seq { index } => {
                shown.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Map { key } | Segment::Enum { variant: key } => key.as_str(),
            Segment::Unknown => "?",
        };
        let plain = (1..=40).contains(&key.len())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain {
            shown.push_str(&format!("[{}]", quoted(key)));
        } else if shown == "$" {
            shown = key.to_string();
        } else {
            shown.push('.');
            shown.push_str(key);
        }
    }
    shown
}
