//! Text analysis for the search index: a tokenizer that handles Chinese, Japanese and Korean
//! next to Latin text, the analyzers registered on the index, and the pure helpers that turn a
//! query, an email address or a phone number into the same terms the index holds.
//!
//! CJK text has no spaces between words, so runs of CJK characters are indexed as overlapping
//! bigrams ("纷享销客" → 纷享, 享销, 销客) at consecutive positions; a query's bigrams, searched
//! as a phrase, then match any document containing the query's characters in that order. Other
//! letters and digits form one token per run, lowercased and folded to ASCII. Everything else
//! (spaces, punctuation, symbols) separates tokens, and so does a switch between CJK and
//! non-CJK characters.

use tantivy::Index;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, RemoveLongFilter, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};

/// Name of the full-text analyzer ([`text_analyzer`]) in an index's tokenizer manager.
pub const TEXT: &str = "leadline_text";

/// Name of the keyword analyzer ([`keyword_analyzer`]): the whole value as one lowercased token,
/// for emails, phones and ids.
pub const KEYWORD: &str = "leadline_keyword";

/// Tokens longer than this many bytes are dropped by [`text_analyzer`] (base64 blobs, URLs
/// without separators and the like would only bloat the index).
const MAX_TOKEN_BYTES: usize = 64;

/// At most this many terms come out of [`phone_tokens`].
const MAX_PHONE_TOKENS: usize = 16;

/// The shortest phone suffix that is indexed and accepted as a phone query.
const MIN_PHONE_DIGITS: usize = 4;

/// The longest digit string [`phone_query`] accepts (E.164 allows 15 digits).
const MAX_PHONE_DIGITS: usize = 15;

/// Whether `c` is written without spaces between words and is therefore indexed as bigrams:
/// Han ideographs (all extensions and the compatibility blocks), Hiragana, Katakana
/// (including half-width forms) and Hangul.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF // Hangul Jamo
        | 0x3005..=0x3007 // 々 〆 〇
        | 0x3041..=0x309F // Hiragana
        | 0x30A1..=0x30FA // Katakana (without the double hyphen ゠ and the middle dot ・)
        | 0x30FC..=0x30FF // Katakana prolonged sound mark and iteration marks
        | 0x3131..=0x318F // Hangul Compatibility Jamo
        | 0x31F0..=0x31FF // Katakana Phonetic Extensions
        | 0x3400..=0x4DBF // CJK Unified Ideographs Extension A
        | 0x4E00..=0x9FFF // CJK Unified Ideographs
        | 0xA960..=0xA97F // Hangul Jamo Extended-A
        | 0xAC00..=0xD7AF // Hangul Syllables
        | 0xD7B0..=0xD7FF // Hangul Jamo Extended-B
        | 0xF900..=0xFAFF // CJK Compatibility Ideographs
        | 0xFF66..=0xFF9F // Half-width Katakana
        | 0xFFA0..=0xFFDC // Half-width Hangul
        | 0x1B000..=0x1B16F // Kana Supplement and Extended-A
        | 0x20000..=0x323AF // Extensions B–I and the Compatibility Ideographs Supplement
    )
}

/// Splits text into CJK bigrams and runs of other letters and digits; see the module docs.
///
/// Emits raw tokens (original case, no folding); [`text_analyzer`] adds the filters.
#[derive(Clone, Default)]
pub struct MixedTokenizer;

impl Tokenizer for MixedTokenizer {
    type TokenStream<'a> = MixedTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MixedTokenStream<'a> {
        MixedTokenStream {
            text,
            cursor: 0,
            cjk_tail: None,
            next_position: 0,
            token: Token::default(),
        }
    }
}

/// The token stream of [`MixedTokenizer`]. Tokens are produced lazily.
pub struct MixedTokenStream<'a> {
    text: &'a str,
    /// Byte offset where scanning for the next token resumes (outside a CJK run).
    cursor: usize,
    /// Inside a CJK run: the byte range of the last character of the previous bigram, which
    /// starts the next bigram.
    cjk_tail: Option<(usize, usize)>,
    next_position: usize,
    token: Token,
}

impl MixedTokenStream<'_> {
    fn emit(&mut self, from: usize, to: usize) {
        self.token.offset_from = from;
        self.token.offset_to = to;
        self.token.position = self.next_position;
        self.token.position_length = 1;
        self.token.text.clear();
        self.token.text.push_str(&self.text[from..to]);
        self.next_position += 1;
    }
}

impl TokenStream for MixedTokenStream<'_> {
    fn advance(&mut self) -> bool {
        let text = self.text;
        if let Some((tail_from, tail_to)) = self.cjk_tail.take() {
            match text[tail_to..].chars().next() {
                Some(next) if is_cjk(next) => {
                    let next_to = tail_to + next.len_utf8();
                    self.emit(tail_from, next_to);
                    self.cjk_tail = Some((tail_to, next_to));
                    return true;
                }
                _ => self.cursor = tail_to,
            }
        }
        let base = self.cursor;
        let mut chars = text[base..].char_indices();
        while let Some((i, c)) = chars.next() {
            let from = base + i;
            let to = from + c.len_utf8();
            if is_cjk(c) {
                match text[to..].chars().next() {
                    Some(next) if is_cjk(next) => {
                        let next_to = to + next.len_utf8();
                        self.emit(from, next_to);
                        self.cjk_tail = Some((to, next_to));
                    }
                    _ => {
                        self.emit(from, to);
                        self.cursor = to;
                    }
                }
                return true;
            }
            if c.is_alphanumeric() {
                let mut end = to;
                for (j, d) in chars.by_ref() {
                    if !d.is_alphanumeric() || is_cjk(d) {
                        break;
                    }
                    end = base + j + d.len_utf8();
                }
                self.emit(from, end);
                self.cursor = end;
                return true;
            }
        }
        self.cursor = text.len();
        false
    }

    fn token(&self) -> &Token {
        &self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.token
    }
}

/// The full-text analyzer: [`MixedTokenizer`], tokens over 64 bytes dropped, lowercased,
/// folded to ASCII (é → e, ß → ss). CJK tokens pass the filters unchanged.
pub fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(MixedTokenizer)
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The keyword analyzer: the whole value as one lowercased token.
pub fn keyword_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .build()
}

/// Registers [`text_analyzer`] as [`TEXT`] and [`keyword_analyzer`] as [`KEYWORD`] on `index`.
/// Must be called every time an index is opened or created, before indexing or searching.
pub fn register(index: &Index) {
    let tokenizers = index.tokenizers();
    tokenizers.register(TEXT, text_analyzer());
    tokenizers.register(KEYWORD, keyword_analyzer());
}

/// One analyzed query term, in query order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryToken {
    pub text: String,
    /// A CJK bigram or single CJK character (as opposed to a word).
    pub cjk: bool,
}

/// A unit of a query to match on its own: one phrase per CJK run, one term per word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryGroup {
    /// The bigrams of one CJK run in order (search them as a phrase), or its single character.
    Cjk(Vec<String>),
    /// One lowercased, ASCII-folded word.
    Word(String),
}

/// Analyzes a query exactly as [`text_analyzer`] analyzes documents and groups the terms: the
/// bigrams of each CJK run together, each word alone.
pub fn query_groups(q: &str) -> Vec<QueryGroup> {
    let mut groups = Vec::new();
    let mut analyzer = text_analyzer();
    let mut stream = analyzer.token_stream(q);
    // End offset of the previous token if it was CJK: overlapping bigrams share a run.
    let mut cjk_run_end: Option<usize> = None;
    while let Some(token) = stream.next() {
        let cjk = token.text.chars().next().is_some_and(is_cjk);
        if !cjk {
            groups.push(QueryGroup::Word(token.text.clone()));
            cjk_run_end = None;
            continue;
        }
        match (cjk_run_end, groups.last_mut()) {
            (Some(end), Some(QueryGroup::Cjk(run))) if token.offset_from < end => {
                run.push(token.text.clone());
            }
            _ => groups.push(QueryGroup::Cjk(vec![token.text.clone()])),
        }
        cjk_run_end = Some(token.offset_to);
    }
    groups
}

/// The terms of [`query_groups`] flattened, in query order.
pub fn query_tokens(q: &str) -> Vec<QueryToken> {
    query_groups(q)
        .into_iter()
        .flat_map(|group| match group {
            QueryGroup::Cjk(run) => run
                .into_iter()
                .map(|text| QueryToken { text, cjk: true })
                .collect::<Vec<_>>(),
            QueryGroup::Word(text) => vec![QueryToken { text, cjk: false }],
        })
        .collect()
}

/// Keyword terms for an email address: the whole address, the local part and the domain, all
/// lowercased and without duplicates. A value without `@` yields only itself, lowercased.
pub fn email_tokens(email: &str) -> Vec<String> {
    let whole = email.trim().to_lowercase();
    if whole.is_empty() {
        return Vec::new();
    }
    let mut tokens = vec![whole.clone()];
    if let Some((local, domain)) = whole.rsplit_once('@') {
        for part in [local, domain] {
            if !part.is_empty() && !tokens.iter().any(|t| t == part) {
                tokens.push(part.to_owned());
            }
        }
    }
    tokens
}

/// Keyword terms for a phone number: its digits, then every shorter suffix of at least four
/// digits, longest first ("+8613812345678" → "8613812345678", "613812345678", …, "5678"), so
/// a search for the last digits finds it. At most 16 terms.
pub fn phone_tokens(e164: &str) -> Vec<String> {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Vec::new();
    }
    let n = digits.len();
    let longest_suffix = (n - 1).min(MIN_PHONE_DIGITS + MAX_PHONE_TOKENS - 2);
    let mut tokens = Vec::with_capacity(MAX_PHONE_TOKENS);
    tokens.push(digits.clone());
    for len in (MIN_PHONE_DIGITS..=longest_suffix).rev() {
        tokens.push(digits[n - len..].to_owned());
    }
    tokens
}

/// If the query looks like (part of) a phone number, its digits: 4 to 15 ASCII digits once
/// whitespace and `+ - ( ) .` are ignored. Otherwise `None`.
pub fn phone_query(q: &str) -> Option<String> {
    let mut digits = String::new();
    for c in q.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' | '-' | '(' | ')' | '.' => {}
            c if c.is_whitespace() => {}
            _ => return None,
        }
    }
    (MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS)
        .contains(&digits.len())
        .then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::DocSetCollector;
    use tantivy::query::{BooleanQuery, PhraseQuery, Query, TermQuery};
    use tantivy::schema::{
        Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions, Value,
    };
    use tantivy::{IndexWriter, Searcher, TantivyDocument, Term, doc};

    /// (text, position, offset_from, offset_to) of every token the analyzer emits.
    fn analyze(mut analyzer: TextAnalyzer, text: &str) -> Vec<(String, usize, usize, usize)> {
        let mut out = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while let Some(t) = stream.next() {
            out.push((t.text.clone(), t.position, t.offset_from, t.offset_to));
        }
        out
    }

    fn texts(text: &str) -> Vec<String> {
        analyze(text_analyzer(), text)
            .into_iter()
            .map(|(t, ..)| t)
            .collect()
    }

    #[test]
    fn cjk_run_becomes_overlapping_bigrams_with_byte_offsets() {
        assert_eq!(
            analyze(text_analyzer(), "纷享销客"),
            vec![
                ("纷享".to_owned(), 0, 0, 6),
                ("享销".to_owned(), 1, 3, 9),
                ("销客".to_owned(), 2, 6, 12),
            ]
        );
    }

    #[test]
    fn single_cjk_char_is_one_token() {
        assert_eq!(
            analyze(text_analyzer(), "王"),
            vec![("王".to_owned(), 0, 0, 3)]
        );
        assert_eq!(texts("王 李"), vec!["王", "李"]);
    }

    #[test]
    fn switch_between_cjk_and_latin_separates() {
        assert_eq!(
            texts("客户关注智能制造和MES系统"),
            vec![
                "客户", "户关", "关注", "注智", "智能", "能制", "制造", "造和", "mes", "系统"
            ]
        );
        let tokens = analyze(text_analyzer(), "客户关注智能制造和MES系统");
        let positions: Vec<usize> = tokens.iter().map(|t| t.1).collect();
        assert_eq!(positions, (0..10).collect::<Vec<_>>());
        let (_, _, from, to) = &tokens[8];
        assert_eq!(&"客户关注智能制造和MES系统"[*from..*to], "MES");
    }

    #[test]
    fn latin_words_are_lowercased_and_folded() {
        assert_eq!(texts("Müller & Søn GmbH"), vec!["muller", "son", "gmbh"]);
        assert_eq!(texts("Straße"), vec!["strasse"]);
        assert_eq!(texts("Wang Wei-Ling"), vec!["wang", "wei", "ling"]);
        assert_eq!(texts("MES2026"), vec!["mes2026"]);
        assert_eq!(texts("ceo@acme.io"), vec!["ceo", "acme", "io"]);
    }

    #[test]
    fn offsets_of_words_point_into_the_original_text() {
        let text = "Wang Wei-Ling";
        let tokens = analyze(text_analyzer(), text);
        let originals: Vec<&str> = tokens.iter().map(|t| &text[t.2..t.3]).collect();
        assert_eq!(originals, vec!["Wang", "Wei", "Ling"]);
        assert_eq!(
            tokens.iter().map(|t| t.1).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn japanese_and_korean_are_bigrams_and_cjk_punctuation_separates() {
        assert_eq!(texts("カタカナ"), vec!["カタ", "タカ", "カナ"]);
        assert_eq!(texts("서울시"), vec!["서울", "울시"]);
        assert_eq!(texts("销售、市场"), vec!["销售", "市场"]);
        assert_eq!(
            texts("ジョン・スミス"),
            vec!["ジョ", "ョン", "スミ", "ミス"]
        );
    }

    #[test]
    fn empty_and_punctuation_only_input_has_no_tokens() {
        assert!(texts("").is_empty());
        assert!(texts("  -- @ ... !!! 。、").is_empty());
    }

    #[test]
    fn long_tokens_are_dropped() {
        let long = "a".repeat(100);
        assert_eq!(texts(&format!("x {long} y")), vec!["x", "y"]);
    }

    #[test]
    fn keyword_analyzer_keeps_the_whole_value() {
        assert_eq!(
            analyze(keyword_analyzer(), "Li.Wei@Example.COM"),
            vec![("li.wei@example.com".to_owned(), 0, 0, 18)]
        );
    }

    #[test]
    fn query_groups_split_cjk_runs_and_words() {
        assert_eq!(
            query_groups("王总 acme 纷享销客"),
            vec![
                QueryGroup::Cjk(vec!["王总".to_owned()]),
                QueryGroup::Word("acme".to_owned()),
                QueryGroup::Cjk(vec![
                    "纷享".to_owned(),
                    "享销".to_owned(),
                    "销客".to_owned()
                ]),
            ]
        );
        // Adjacent runs separated only by punctuation stay separate phrases.
        assert_eq!(
            query_groups("销售,市场 王"),
            vec![
                QueryGroup::Cjk(vec!["销售".to_owned()]),
                QueryGroup::Cjk(vec!["市场".to_owned()]),
                QueryGroup::Cjk(vec!["王".to_owned()]),
            ]
        );
        assert!(query_groups(" , ").is_empty());
    }

    #[test]
    fn query_tokens_flatten_groups() {
        assert_eq!(
            query_tokens("Müller 王"),
            vec![
                QueryToken {
                    text: "muller".to_owned(),
                    cjk: false
                },
                QueryToken {
                    text: "王".to_owned(),
                    cjk: true
                },
            ]
        );
    }

    #[test]
    fn email_tokens_cover_whole_local_and_domain() {
        assert_eq!(
            email_tokens("Li.Wei@Example.COM"),
            vec!["li.wei@example.com", "li.wei", "example.com"]
        );
        assert_eq!(email_tokens("Not An Email"), vec!["not an email"]);
        assert_eq!(
            email_tokens("@example.com"),
            vec!["@example.com", "example.com"]
        );
        assert!(email_tokens("  ").is_empty());
    }

    #[test]
    fn phone_tokens_are_digits_and_suffixes() {
        let tokens = phone_tokens("+8613812345678");
        assert_eq!(tokens.first().map(String::as_str), Some("8613812345678"));
        assert_eq!(tokens.get(1).map(String::as_str), Some("613812345678"));
        assert_eq!(tokens.last().map(String::as_str), Some("5678"));
        assert_eq!(tokens.len(), 13 - 4 + 1);
        assert_eq!(phone_tokens("+1 (415) 555-0100")[0], "14155550100");
        assert_eq!(phone_tokens("123"), vec!["123"]);
        assert_eq!(phone_tokens("1234"), vec!["1234"]);
        assert!(phone_tokens("+").is_empty());
        let long = phone_tokens(&"1234567890".repeat(3));
        assert_eq!(long.len(), MAX_PHONE_TOKENS);
        assert_eq!(long.last().map(String::as_str), Some("7890"));
    }

    #[test]
    fn phone_query_accepts_digit_strings_only() {
        assert_eq!(phone_query("138-1234-5678").as_deref(), Some("13812345678"));
        assert_eq!(
            phone_query("+86 138 1234 5678").as_deref(),
            Some("8613812345678")
        );
        assert_eq!(phone_query("(415) 555.0100").as_deref(), Some("4155550100"));
        assert_eq!(phone_query("5678").as_deref(), Some("5678"));
        assert_eq!(phone_query("12"), None);
        assert_eq!(phone_query("abc123"), None);
        assert_eq!(phone_query("1234567890123456"), None);
        assert_eq!(phone_query(""), None);
    }

    struct Fixture {
        searcher: Searcher,
        id: Field,
        body: Field,
    }

    impl Fixture {
        fn new(docs: &[(u64, &str)]) -> Fixture {
            let mut builder = Schema::builder();
            let id = builder.add_u64_field("id", INDEXED | STORED);
            let indexing = TextFieldIndexing::default()
                .set_tokenizer(TEXT)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions);
            let body = builder.add_text_field(
                "body",
                TextOptions::default().set_indexing_options(indexing),
            );
            let index = Index::create_in_ram(builder.build());
            register(&index);
            let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
            for &(doc_id, text) in docs {
                writer
                    .add_document(doc!(id => doc_id, body => text))
                    .unwrap();
            }
            writer.commit().unwrap();
            let searcher = index.reader().unwrap().searcher();
            Fixture { searcher, id, body }
        }

        /// Builds the query the way the search service will: one phrase per CJK run, a term
        /// per word, all required.
        fn query(&self, q: &str) -> Box<dyn Query> {
            let term = |t: &str| Term::from_field_text(self.body, t);
            let single = |t: &str| -> Box<dyn Query> {
                Box::new(TermQuery::new(term(t), IndexRecordOption::WithFreqs))
            };
            let parts: Vec<Box<dyn Query>> = query_groups(q)
                .iter()
                .map(|group| match group {
                    QueryGroup::Cjk(run) if run.len() > 1 => {
                        Box::new(PhraseQuery::new(run.iter().map(|t| term(t)).collect()))
                            as Box<dyn Query>
                    }
                    QueryGroup::Cjk(run) => single(&run[0]),
                    QueryGroup::Word(word) => single(word),
                })
                .collect();
            Box::new(BooleanQuery::intersection(parts))
        }

        fn hits(&self, q: &str) -> Vec<u64> {
            let found = self
                .searcher
                .search(self.query(q).as_ref(), &DocSetCollector)
                .unwrap();
            let mut ids: Vec<u64> = found
                .into_iter()
                .map(|address| {
                    let doc: TantivyDocument = self.searcher.doc(address).unwrap();
                    doc.get_first(self.id).and_then(|v| v.as_u64()).unwrap()
                })
                .collect();
            ids.sort_unstable();
            ids
        }
    }

    #[test]
    fn registered_analyzer_finds_cjk_phrases_and_words_end_to_end() {
        let fx = Fixture::new(&[(1, "客户关注智能制造和MES系统"), (2, "纷享销客 CRM")]);
        assert_eq!(fx.hits("智能制造"), vec![1]);
        assert_eq!(fx.hits("纷享"), vec![2]);
        assert_eq!(fx.hits("销客"), vec![2]);
        assert_eq!(fx.hits("纷享销客"), vec![2]);
        assert_eq!(fx.hits("mes"), vec![1]);
        assert_eq!(fx.hits("MES 系统"), vec![1]);
        assert_eq!(fx.hits("crm 纷享"), vec![2]);
        // The characters exist in doc 1 but not in this order.
        assert!(fx.hits("制造智能").is_empty());
        assert!(fx.hits("智制").is_empty());
    }

    #[test]
    fn mes_term_query_matches_only_the_document_with_mes() {
        let fx = Fixture::new(&[(1, "客户关注智能制造和MES系统"), (2, "纷享销客 CRM")]);
        let query = TermQuery::new(
            Term::from_field_text(fx.body, "mes"),
            IndexRecordOption::Basic,
        );
        let found = fx.searcher.search(&query, &DocSetCollector).unwrap();
        assert_eq!(found.len(), 1);
    }
}
