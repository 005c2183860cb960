//! Text for language models: a byte-level [`Vocabulary`], a [`TextCorpus`]
//! cut into training windows, and the bundled corpus ([`regex_automata`]:
//! the Rust source of the crate regex-automata 0.4.19, MIT licence; see
//! `amp-train/data/README.md`).

use super::TensorDataset;
use crate::{Error, Result};
use amp_tensor::{Device, Tensor};
use flate2::read::GzDecoder;
use std::io::Read;
use std::sync::OnceLock;

static REGEX_AUTOMATA_GZ: &[u8] = include_bytes!("../../data/regex-automata.txt.gz");

/// Bytes of the bundled corpus.
pub const REGEX_AUTOMATA_BYTES: usize = 2_612_352;

/// A byte-level vocabulary: the distinct bytes of a text, in byte order,
/// numbered from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    bytes: Vec<u8>,
    index: [Option<u16>; 256],
}

impl Vocabulary {
    /// The vocabulary of `text`'s bytes.
    pub fn of(text: &[u8]) -> Vocabulary {
        let mut seen = [false; 256];
        for &b in text {
            seen[b as usize] = true;
        }
        let bytes: Vec<u8> = (0..=255u8).filter(|&b| seen[b as usize]).collect();
        let mut index = [None; 256];
        for (i, &b) in bytes.iter().enumerate() {
            index[b as usize] = Some(i as u16);
        }
        Vocabulary { bytes, index }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for the vocabulary of an empty text.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Token ids of `text`; `Err` naming the first byte outside the vocabulary.
    pub fn encode(&self, text: &[u8]) -> Result<Vec<i64>> {
        text.iter()
            .enumerate()
            .map(|(i, &b)| {
                self.index[b as usize].map(i64::from).ok_or_else(|| {
                    Error::data(
                        "Vocabulary::encode",
                        format!("byte {b:#04x} at offset {i} is not in the vocabulary"),
                    )
                })
            })
            .collect()
    }

    /// The text of token ids (invalid UTF-8 shown as U+FFFD); `Err` for an id
    /// outside the vocabulary.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let bytes = ids
            .iter()
            .map(|&id| {
                usize::try_from(id)
                    .ok()
                    .and_then(|i| self.bytes.get(i).copied())
                    .ok_or_else(|| {
                        Error::data(
                            "Vocabulary::decode",
                            format!("token {id} is outside the vocabulary of {}", self.len()),
                        )
                    })
            })
            .collect::<Result<Vec<u8>>>()?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// A text as token ids with its vocabulary, split into a training part and a
/// validation part.
#[derive(Debug, Clone)]
pub struct TextCorpus {
    vocab: Vocabulary,
    train: Vec<i64>,
    valid: Vec<i64>,
}

impl TextCorpus {
    /// `text` with the first `1 - valid_fraction` of its bytes for training
    /// and the rest for validation (the split is fixed, not shuffled).
    pub fn new(text: &[u8], valid_fraction: f64) -> Result<TextCorpus> {
        if !(0.0..1.0).contains(&valid_fraction) {
            return Err(Error::data(
                "TextCorpus::new",
                format!("valid_fraction must be in [0, 1), got {valid_fraction}"),
            ));
        }
        let vocab = Vocabulary::of(text);
        let ids = vocab.encode(text)?;
        let cut = ((ids.len() as f64) * (1.0 - valid_fraction)).round() as usize;
        Ok(TextCorpus {
            vocab,
            valid: ids[cut..].to_vec(),
            train: ids[..cut].to_vec(),
        })
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocabulary {
        &self.vocab
    }

    /// Token ids of the training part.
    pub fn train_ids(&self) -> &[i64] {
        &self.train
    }

    /// Token ids of the validation part.
    pub fn valid_ids(&self) -> &[i64] {
        &self.valid
    }

    /// The training (`valid = false`) or validation part as next-token pairs:
    /// non-overlapping windows of `context + 1` tokens, inputs `[N, context]`
    /// and targets `[N, context]` (the inputs shifted by one).
    pub fn windows(&self, context: usize, valid: bool, device: &Device) -> Result<TensorDataset> {
        let ids = if valid { &self.valid } else { &self.train };
        if context == 0 || ids.len() < context + 1 {
            return Err(Error::data(
                "TextCorpus::windows",
                format!(
                    "context {context} needs at least {} tokens, the part has {}",
                    context + 1,
                    ids.len()
                ),
            ));
        }
        let n = (ids.len() - 1) / context;
        let mut x = Vec::with_capacity(n * context);
        let mut y = Vec::with_capacity(n * context);
        for w in 0..n {
            x.extend_from_slice(&ids[w * context..(w + 1) * context]);
            y.extend_from_slice(&ids[w * context + 1..(w + 1) * context + 1]);
        }
        TensorDataset::new(vec![
            Tensor::from_vec(x, &[n, context], device)?,
            Tensor::from_vec(y, &[n, context], device)?,
        ])
    }
}

/// The bundled corpus — the source of regex-automata 0.4.19 — split 90/10.
pub fn regex_automata() -> Result<&'static TextCorpus> {
    static CORPUS: OnceLock<std::result::Result<TextCorpus, String>> = OnceLock::new();
    CORPUS
        .get_or_init(|| {
            let mut text = Vec::with_capacity(REGEX_AUTOMATA_BYTES);
            GzDecoder::new(REGEX_AUTOMATA_GZ)
                .read_to_end(&mut text)
                .map_err(|e| format!("decompressing: {e}"))?;
            if text.len() != REGEX_AUTOMATA_BYTES {
                return Err(format!(
                    "{} bytes, expected {REGEX_AUTOMATA_BYTES}",
                    text.len()
                ));
            }
            TextCorpus::new(&text, 0.1).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::data("regex_automata corpus", e.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_round_trips_and_refuses_strangers() {
        let v = Vocabulary::of(b"hello, world");
        assert_eq!(v.len(), 9);
        let ids = v.encode(b"hello").unwrap();
        assert_eq!(ids, [4, 3, 5, 5, 6]); // h e l l o in " ,dehlorw"
        assert_eq!(v.decode(&ids).unwrap(), "hello");
        assert!(v.encode(b"hex").unwrap_err().to_string().contains("0x78"));
        assert!(v.decode(&[9]).is_err() && v.decode(&[-1]).is_err());
    }

    #[test]
    fn windows_are_next_token_pairs() {
        let c = TextCorpus::new(b"abcdefghij", 0.2).unwrap();
        assert_eq!((c.train_ids().len(), c.valid_ids().len()), (8, 2));
        let w = c.windows(3, false, &Device::reference()).unwrap();
        let (x, y) = (
            w.tensors()[0].to_vec::<i64>().unwrap(),
            w.tensors()[1].to_vec::<i64>().unwrap(),
        );
        assert_eq!(x, [0, 1, 2, 3, 4, 5]); // abc def
        assert_eq!(y, [1, 2, 3, 4, 5, 6]); // bcd efg
        assert!(c.windows(3, true, &Device::reference()).is_err());
    }

    #[test]
    fn the_bundled_corpus_is_the_published_text() {
        let c = regex_automata().unwrap();
        assert_eq!(
            c.train_ids().len() + c.valid_ids().len(),
            REGEX_AUTOMATA_BYTES
        );
        let head = c.vocab().decode(&c.train_ids()[..40]).unwrap();
        assert!(
            head.starts_with("// ==== regex-automata-0.4.19/src/"),
            "{head}"
        );
        assert!(c.vocab().len() < 256);
    }
}
