//! CLIP's byte-level BPE tokenizer, read from a Stable Diffusion export's `tokenizer/` folder
//! (`vocab.json`, `merges.txt`, `tokenizer_config.json`), giving the ids `transformers.CLIPTokenizer`
//! gives with `padding="max_length", truncation=True` — what diffusers and optimum pipelines call.
//!
//! It follows CLIPTokenizer without `ftfy` installed (transformers' default): BERT's basic clean-up
//! (control characters dropped, whitespace unified, spaces around CJK ideographs, NFC, lower case,
//! no accent stripping), CLIP's pre-tokenization pattern, then BPE with `</w>` marking a word's end.
//! `tokenizers`' fast CLIP tokenizer differs from it on control characters and CJK text, so it is
//! not used here. Character classes come from Rust's Unicode tables, which may be newer than a given
//! Python's: characters assigned since then can tokenize differently.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIPTokenizer reads at most this many merges (its vocabulary is 49,408 entries).
const MAX_MERGES: usize = 49152 - 256 - 2;

pub struct ClipTokenizer {
    vocab: HashMap<String, i64>,
    ranks: HashMap<(String, String), usize>,
    pattern: Regex,
    byte_chars: [char; 256],
    bos: i64,
    eos: i64,
    pad: i64,
    unk: i64,
    /// The special tokens' spellings, at which the raw text is split first (an SD 2 tokenizer's
    /// `!` padding token among them, as in transformers).
    specials: Vec<(String, i64)>,
    max_length: usize,
}

/// The `tokenizer_config.json` keys that change the ids; the rest are ignored.
#[derive(Deserialize, Default)]
struct Config {
    model_max_length: Option<f64>,
    pad_token: Option<TokenSpec>,
    unk_token: Option<TokenSpec>,
    bos_token: Option<TokenSpec>,
    eos_token: Option<TokenSpec>,
}

/// A special token, as a plain string or as transformers' serialised `AddedToken`.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Text(String),
    Added { content: String },
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            TokenSpec::Text(s) | TokenSpec::Added { content: s } => s,
        }
    }
}

impl ClipTokenizer {
    /// Reads `vocab.json`, `merges.txt` and, when present, `tokenizer_config.json` from `dir`.
    pub fn load(dir: &Path) -> Result<ClipTokenizer> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| Error::io(&dir.join(name), e));
        let vocab: HashMap<String, i64> = serde_json::from_str(&read("vocab.json")?)
            .map_err(|e| Error::Model(format!("{}: {e}", dir.join("vocab.json").display())))?;
        let merges = read("merges.txt")?;
        let config: Config = match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::Model(format!("{}: {e}", dir.join("tokenizer_config.json").display())))?,
            Err(_) => Config::default(),
        };
        Self::new(vocab, &merges, config).map_err(|e| match e {
            Error::Model(m) => Error::Model(format!("{}: {m}", dir.display())),
            e => e,
        })
    }

    fn new(vocab: HashMap<String, i64>, merges: &str, config: Config) -> Result<ClipTokenizer> {
        // As CLIPTokenizer: drop the version line, keep at most MAX_MERGES, ignore malformed lines.
        let ranks = merges
            .trim()
            .split('\n')
            .skip(1)
            .take(MAX_MERGES)
            .enumerate()
            .filter_map(|(rank, line)| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [a, b] => Some(((a.to_string(), b.to_string()), rank)),
                _ => None,
            })
            .fold(HashMap::new(), |mut m, (pair, rank)| {
                m.entry(pair).or_insert(rank);
                m
            });
        let mut specials: Vec<(String, i64)> = Vec::new();
        let mut id = |spec: &Option<TokenSpec>, default: &str, what: &str| -> Result<i64> {
            let token = spec.as_ref().map_or(default, |s| s.content());
            let id = vocab
                .get(token)
                .copied()
                .ok_or_else(|| Error::Model(format!("the {what} token `{token}` is not in vocab.json")))?;
            if !token.is_empty() && !specials.iter().any(|(s, _)| s == token) {
                specials.push((token.to_string(), id));
            }
            Ok(id)
        };
        let (bos, eos) = (id(&config.bos_token, BOS, "start")?, id(&config.eos_token, EOS, "end")?);
        let (pad, unk) = (id(&config.pad_token, EOS, "padding")?, id(&config.unk_token, EOS, "unknown")?);
        let max_length = match config.model_max_length {
            None => 77,
            Some(n) if (2.0..=4096.0).contains(&n) && n.fract() == 0.0 => n as usize,
            // transformers writes a huge sentinel when no length is set; CLIP's is 77.
            Some(n) if n > 4096.0 => 77,
            Some(n) => {
                return Err(Error::Model(format!("tokenizer_config.json: model_max_length {n} is not a length")))
            }
        };
        let pattern =
            Regex::new(r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+")
                .map_err(|e| Error::Internal(format!("CLIP pattern: {e}")))?;
        Ok(ClipTokenizer { bos, eos, pad, unk, specials, vocab, ranks, pattern, byte_chars: byte_chars(), max_length })
    }

    /// Ids per prompt: `max_length` of them, start and end tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The ids of `text` as the pipelines pass them to the text encoder: start token, at most
    /// `max_length - 2` tokens, end token, padding to `max_length`.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend(self.tokens(text).into_iter().take(self.max_length - 2));
        ids.push(self.eos);
        ids.resize(self.max_length, self.pad);
        ids
    }

    /// The ids of `text`'s tokens, without start, end or padding.
    pub fn tokens(&self, text: &str) -> Vec<i64> {
        // transformers first splits the raw text at the special tokens' exact spellings.
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id)))
                .min_by_key(|&(at, len, _)| (at, usize::MAX - len));
            let Some((at, len, id)) = next else { break };
            self.chunk(&rest[..at], &mut ids);
            ids.push(id);
            rest = &rest[at + len..];
        }
        self.chunk(rest, &mut ids);
        ids
    }

    fn chunk(&self, text: &str, ids: &mut Vec<i64>) {
        let text = basic_clean(text);
        for m in self.pattern.find_iter(&text) {
            let piece = m.as_str();
            // Special tokens in other letter cases, lower-cased by the clean-up.
            if piece == BOS || piece == EOS {
                ids.push(self.vocab.get(piece).copied().unwrap_or(self.unk));
                continue;
            }
            let mapped: Vec<String> = piece.bytes().map(|b| self.byte_chars[b as usize].to_string()).collect();
            for token in self.bpe(mapped) {
                ids.push(self.vocab.get(&token).copied().unwrap_or(self.unk));
            }
        }
    }

    /// Byte-pair merges of one pre-token (its bytes as characters), lowest rank first.
    fn bpe(&self, mut word: Vec<String>) -> Vec<String> {
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| self.ranks.get(&(w[0].clone(), w[1].clone())).map(|&r| (r, w[0].clone(), w[1].clone())))
                .min_by_key(|(r, _, _)| *r);
            let Some((_, first, second)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }
}

/// BERT's BasicTokenizer as CLIPTokenizer configures it (no accent stripping, no punctuation
/// split), its tokens joined by single spaces.
fn basic_clean(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_chinese(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else if c == ' ' || c == '\t' || c == '\n' || c == '\r' || is_space_separator(c) {
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    let nfc: String = cleaned.nfc().collect();
    nfc.split(char::is_whitespace).filter(|t| !t.is_empty()).map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// Unicode category C* other than tab, newline and carriage return (BERT's `_is_control`).
fn is_control(c: char) -> bool {
    use std::sync::OnceLock;
    static OTHER: OnceLock<Regex> = OnceLock::new();
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    let re = OTHER.get_or_init(|| Regex::new(r"^\p{C}$").expect("static pattern"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// Unicode category Zs.
fn is_space_separator(c: char) -> bool {
    matches!(c, '\u{20}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// The CJK ideograph blocks BERT pads with spaces.
fn is_chinese(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F
        | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// GPT-2's reversible map from bytes to printable characters.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ClipTokenizer {
        let merges = "#version: 0.2\nl o\nlo w</w>\nh i</w>";
        let mut vocab: HashMap<String, i64> = HashMap::new();
        for (i, t) in ["l", "o", "w</w>", "lo", "low</w>", "h", "i</w>", "hi</w>", BOS, EOS].iter().enumerate() {
            vocab.insert(t.to_string(), i as i64);
        }
        ClipTokenizer::new(vocab, merges, Config { model_max_length: Some(6.0), ..Default::default() }).unwrap()
    }

    #[test]
    fn merges_by_rank_and_marks_word_ends() {
        let t = tiny();
        assert_eq!(t.tokens("low"), vec![4]);
        assert_eq!(t.tokens("  HI\tlow "), vec![7, 4]);
        // An unknown piece becomes the unknown token (the end token, as in CLIP).
        assert_eq!(t.tokens("x"), vec![9]);
    }

    #[test]
    fn pads_and_truncates_to_the_model_length() {
        let t = tiny();
        assert_eq!(t.encode("hi"), vec![8, 7, 9, 9, 9, 9]);
        assert_eq!(t.encode("hi hi hi hi hi"), vec![8, 7, 7, 7, 7, 9]);
    }

    #[test]
    fn byte_map_is_a_bijection_onto_printable_characters() {
        let m = byte_chars();
        let distinct: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m[b' ' as usize], '\u{120}');
    }

    #[test]
    fn cleans_like_bert_basic_tokenizer() {
        assert_eq!(basic_clean("A\u{0}b\u{200b}C\u{3000}D\u{4e2d}e"), "abc d \u{4e2d} e");
        assert_eq!(basic_clean("Cafe\u{301}"), "caf\u{e9}");
    }
}
