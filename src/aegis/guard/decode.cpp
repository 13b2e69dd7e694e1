// Decoders for payloads smuggled past a filter (see decode.h). Every decoder is a linear scan that
// proposes spans; a proposal becomes a segment only when its decoding is printable UTF-8 and, for
// the decoders that apply to any words at all (ROT13, reversed text, leetspeak), when it reads as
// English where the original did not. That keeps ordinary prompts, code, ids and digests silent.
#include "aegis/guard/decode.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include "aegis/core/text.h"

namespace aegis::guard {
namespace {

// ---------------------------------------------------------------------------------------------
// The dictionary: common English words (the most frequent few hundred) and the vocabulary of
// prompt injection. Lower case, ASCII, 2+ letters. Order does not matter: a hash table is built
// from it at compile time.
constexpr std::string_view kWords[] = {
    // function words
    "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did",
    "do", "does", "doing", "down", "during", "each", "either", "else", "even", "ever", "every", "few", "for",
    "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself",
    "his", "how", "however", "if", "in", "into", "is", "it", "its", "itself", "just", "least", "less", "like",
    "many", "may", "me", "might", "more", "most", "much", "must", "my", "myself", "neither", "no", "nor", "not",
    "now", "of", "off", "often", "on", "once", "only", "or", "other", "others", "our", "ours", "ourselves", "out",
    "over", "own", "per", "same", "shall", "she", "should", "since", "so", "some", "such", "than", "that", "the",
    "their", "theirs", "them", "themselves", "then", "there", "these", "they", "this", "those", "though",
    "through", "to", "too", "under", "until", "up", "upon", "us", "very", "via", "was", "we", "were", "what",
    "when", "where", "whether", "which", "while", "who", "whom", "whose", "why", "will", "with", "within",
    "without", "would", "yes", "yet", "you", "your", "yours", "yourself", "yourselves", "ok", "okay", "oh",
    "hi", "hello", "hey", "please", "thank", "thanks", "sorry", "dear", "instead", "anyway", "already", "always",
    "never", "still", "almost", "enough", "quite", "rather", "really", "together", "around", "across", "along",
    "among", "behind", "beyond", "inside", "outside", "toward", "towards", "onto", "unless", "although",
    // common verbs
    "accept", "add", "allow", "answer", "appear", "apply", "ask", "become", "begin", "believe", "bring", "build",
    "buy", "call", "came", "change", "check", "choose", "close", "come", "consider", "continue", "create", "cut",
    "decide", "describe", "die", "done", "draw", "eat", "end", "enter", "explain", "fall", "feel", "fill", "find",
    "finish", "fix", "follow", "found", "get", "give", "given", "go", "going", "gone", "got", "grow", "happen",
    "hear", "help", "hold", "include", "keep", "kill", "know", "known", "learn", "leave", "let", "lie", "list",
    "live", "look", "lose", "love", "made", "make", "mean", "meet", "move", "need", "offer", "open", "pay",
    "play", "provide", "put", "reach", "read", "remain", "remember", "report", "require", "return", "run",
    "said", "save", "saw", "say", "see", "seem", "sell", "send", "serve", "set", "sit", "speak", "spend",
    "stand", "start", "stay", "stop", "take", "talk", "teach", "tell", "think", "told", "took", "try", "turn",
    "understand", "use", "used", "using", "wait", "walk", "want", "watch", "went", "win", "work", "write",
    "written", "wrote", "translate", "summarize", "convert", "generate", "describe", "rewrite", "complete",
    "replace", "remove", "update", "understood", "confirm", "agree", "refuse", "respond", "reply", "obey",
    "comply", "means",
    // common nouns and adjectives
    "able", "age", "air", "area", "back", "bad", "best", "better", "big", "body", "book", "business", "car",
    "case", "child", "children", "city", "company", "country", "day", "days", "different", "door", "early",
    "easy", "end", "eye", "face", "fact", "family", "far", "few", "first", "friend", "full", "game", "good",
    "great", "group", "hand", "hard", "head", "health", "high", "home", "hour", "house", "idea", "important",
    "job", "kind", "large", "last", "late", "later", "life", "light", "line", "little", "long", "lot", "low",
    "man", "money", "month", "morning", "name", "next", "night", "number", "old", "one", "two", "three", "four",
    "five", "ten", "hundred", "order", "part", "party", "people", "person", "place", "point", "possible",
    "power", "problem", "public", "question", "real", "reason", "result", "right", "room", "school", "second",
    "service", "side", "small", "social", "something", "sure", "story", "student", "study", "system", "thing",
    "things", "time", "times", "today", "true", "false", "way", "water", "week", "well", "woman", "women",
    "word", "words", "world", "year", "years", "young", "new", "own", "other", "open", "free", "next", "whole",
    "way", "work", "home", "everyone", "someone", "anyone", "nobody", "anything", "everything", "nothing",
    "attack", "bank", "card", "file", "files", "link", "page", "site", "web", "website", "server", "network",
    "computer", "phone", "number", "address", "account", "email", "mail", "letter", "text", "story", "poem",
    "song", "joke", "recipe", "weather", "food", "music", "movie", "news", "price", "market", "team", "law",
    "government", "history", "science", "art", "information", "example", "details", "help", "support",
    "customer", "please", "short", "simple", "quick", "final", "exact", "exactly", "entire", "hidden",
    // the vocabulary of injection, jailbreaks and exfiltration
    "ignore", "ignored", "ignoring", "disregard", "forget", "previous", "prior", "preceding", "earlier",
    "instruction", "instructions", "directive", "directives", "rule", "rules", "guideline", "guidelines",
    "policy", "policies", "restriction", "restrictions", "restricted", "unrestricted", "filter", "filters",
    "unfiltered", "censored", "uncensored", "safety", "safe", "ethical", "ethics", "moral", "limits",
    "system", "prompt", "prompts", "message", "messages", "context", "initial", "original", "hidden",
    "reveal", "print", "show", "display", "output", "repeat", "verbatim", "dump", "leak", "expose", "disclose",
    "secret", "secrets", "password", "passwords", "key", "keys", "token", "tokens", "credential",
    "credentials", "api", "private", "confidential", "internal", "sensitive", "data", "database", "admin",
    "administrator", "root", "access", "grant", "granted", "permission", "permissions", "privileges",
    "pretend", "act", "acting", "roleplay", "role", "character", "persona", "imagine", "hypothetical",
    "simulate", "mode", "developer", "debug", "jailbreak", "jailbroken", "dan", "bypass", "override",
    "disable", "disabled", "enable", "enabled", "unlock", "unlocked", "activate", "execute", "command",
    "commands", "code", "script", "shell", "delete", "destroy", "drop", "table", "download", "upload", "install",
    "assistant", "ai", "model", "chatbot", "bot", "user", "users", "human", "response", "responses", "reply",
    "content", "harmful", "illegal", "dangerous", "weapon", "weapons", "bomb", "drugs", "hack", "hacking",
    "malware", "virus", "exploit", "steal", "stolen", "fraud", "now", "immediately", "must", "cannot", "can't",
    "anymore", "forbidden", "allowed", "obey", "follow", "new", "task", "goal", "above", "below", "stop",
    "beginning", "everything", "answer", "question", "say", "tell", "write", "send", "forward", "contact",
    "url", "http", "https", "www", "com", "image", "markdown", "render", "click", "visit", "attacker",
};

constexpr std::size_t kTableSize = 2048;  // power of two, well over twice the word count
constexpr std::size_t kMaxWord = 24;

constexpr std::uint32_t word_hash(std::string_view w) {
  std::uint32_t h = 2166136261u;
  for (const char c : w) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  return h;
}

// Slots hold index + 1 into kWords (0 = empty); duplicates in the list are harmless.
constexpr std::array<std::uint16_t, kTableSize> build_table() {
  std::array<std::uint16_t, kTableSize> table{};
  for (std::size_t i = 0; i < std::size(kWords); ++i) {
    std::size_t slot = word_hash(kWords[i]) & (kTableSize - 1);
    bool present = false;
    while (table[slot] != 0) {
      if (kWords[table[slot] - 1] == kWords[i]) {
        present = true;
        break;
      }
      slot = (slot + 1) & (kTableSize - 1);
    }
    if (!present) table[slot] = static_cast<std::uint16_t>(i + 1);
  }
  return table;
}

constexpr auto kTable = build_table();

// Which two-letter beginnings dictionary words have: most words that are not in the dictionary
// are turned away here, before hashing (a quarter of the 676 pairs occur).
constexpr std::array<bool, 26 * 26> build_prefixes() {
  std::array<bool, 26 * 26> prefixes{};
  for (const auto w : kWords) {
    if (w.size() >= 2 && w[0] >= 'a' && w[0] <= 'z' && w[1] >= 'a' && w[1] <= 'z')
      prefixes[static_cast<std::size_t>((w[0] - 'a') * 26 + (w[1] - 'a'))] = true;
  }
  return prefixes;
}

constexpr auto kPrefixes = build_prefixes();
static_assert(std::size(kWords) * 2 < kTableSize, "the word table must stay sparse");

// Byte classes, one table lookup each: the scanners look at every byte several times.
enum : std::uint8_t { kLetter = 1, kDigit = 2, kHex = 4, kBase64 = 8, kSpace = 16, kLeet = 32 };

constexpr std::array<std::uint8_t, 256> build_classes() {
  std::array<std::uint8_t, 256> c{};
  for (int b = 'a'; b <= 'z'; ++b) c[b] |= kLetter | kBase64;
  for (int b = 'A'; b <= 'Z'; ++b) c[b] |= kLetter | kBase64;
  for (int b = '0'; b <= '9'; ++b) c[b] |= kDigit | kHex | kBase64;
  for (int b = 'a'; b <= 'f'; ++b) c[b] |= kHex;
  for (int b = 'A'; b <= 'F'; ++b) c[b] |= kHex;
  for (const char b : {'+', '/', '-', '_'}) c[static_cast<unsigned char>(b)] |= kBase64;
  for (const char b : {' ', '\t', '\n', '\r', '\f', '\v'}) c[static_cast<unsigned char>(b)] |= kSpace;
  for (const char b : {'0', '1', '3', '4', '5', '7', '@', '$', '!'}) c[static_cast<unsigned char>(b)] |= kLeet;
  return c;
}

constexpr auto kClasses = build_classes();

bool has_class(char c, std::uint8_t mask) { return (kClasses[static_cast<unsigned char>(c)] & mask) != 0; }
bool is_letter(char c) { return has_class(c, kLetter); }
bool is_space(char c) { return has_class(c, kSpace); }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// Whether `word` (ASCII letters, any case) is in the dictionary.
bool known_word(std::string_view word) {
  if (word.size() < 2 || word.size() > kMaxWord) return false;
  const char c0 = lower(word[0]);
  const char c1 = lower(word[1]);
  if (c0 < 'a' || c0 > 'z' || c1 < 'a' || c1 > 'z' || !kPrefixes[static_cast<std::size_t>((c0 - 'a') * 26 + (c1 - 'a'))])
    return false;
  char buffer[kMaxWord];
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < word.size(); ++i) {
    buffer[i] = lower(word[i]);
    h = (h ^ static_cast<unsigned char>(buffer[i])) * 16777619u;
  }
  const std::string_view w(buffer, word.size());
  std::size_t slot = h & (kTableSize - 1);
  while (kTable[slot] != 0) {
    if (kWords[kTable[slot] - 1] == w) return true;
    slot = (slot + 1) & (kTableSize - 1);
  }
  return false;
}

struct WordCount {
  std::size_t words = 0;
  std::size_t known = 0;
  std::size_t distinct_known = 0;  // counted up to kDistinctLimit
  double share() const { return words == 0 ? 0.0 : static_cast<double>(known) / static_cast<double>(words); }
};

constexpr std::size_t kDistinctLimit = 8;

WordCount count_words(std::string_view text) {
  WordCount c;
  std::array<std::string_view, kDistinctLimit> seen{};
  std::size_t i = 0;
  while (i < text.size()) {
    if (!is_letter(text[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < text.size() && is_letter(text[j])) ++j;
    if (j - i >= 2) {
      ++c.words;
      const std::string_view w = text.substr(i, j - i);
      if (known_word(w)) {
        ++c.known;
        if (c.distinct_known < kDistinctLimit) {
          const auto same = [&](std::string_view other) {
            return other.size() == w.size() &&
                   std::equal(w.begin(), w.end(), other.begin(), [](char a, char b) { return lower(a) == lower(b); });
          };
          if (std::none_of(seen.begin(), seen.begin() + static_cast<std::ptrdiff_t>(c.distinct_known), same))
            seen[c.distinct_known++] = w;
        }
      }
    }
    i = j;
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers.

// Length of the well-formed UTF-8 sequence at s[i], or 0 when ill-formed.
std::size_t utf8_sequence(std::string_view s, std::size_t i, char32_t* cp_out) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = b(i);
  if (b0 < 0x80) {
    *cp_out = b0;
    return 1;
  }
  std::size_t need;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + need >= s.size()) return 0;
  for (std::size_t k = 1; k <= need; ++k) {
    const unsigned char c = b(i + k);
    if (c < lo || c > hi) return 0;
    lo = 0x80;
    hi = 0xBF;
    cp = (cp << 6) | (c & 0x3F);
  }
  *cp_out = cp;
  return need + 1;
}

using core::append_utf8;

// Decoded bytes are worth reporting only as text: well-formed UTF-8, some letters or digits, and
// (almost) no control characters. Digests, keys and compressed data decode to bytes that fail this.
bool printable_text(std::string_view s) {
  if (s.empty()) return false;
  std::size_t total = 0;
  std::size_t bad = 0;
  std::size_t alnum = 0;
  for (std::size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const std::size_t n = utf8_sequence(s, i, &cp);
    if (n == 0) return false;
    i += n;
    ++total;
    if (cp < 0x20) {
      if (cp != '\t' && cp != '\n' && cp != '\r') ++bad;
    } else if (cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == 0xFFFD || (cp >= 0xFDD0 && cp <= 0xFDEF) ||
               (cp & 0xFFFE) == 0xFFFE) {
      ++bad;
    } else if ((cp >= '0' && cp <= '9') || (cp < 0x80 && is_letter(static_cast<char>(cp))) || cp >= 0xC0) {
      ++alnum;  // non-ASCII letters are not told apart from symbols here: either reads as text
    }
  }
  if (alnum == 0) return false;
  if (total < 20) return bad == 0;
  return bad * 20 <= total;
}

// ---------------------------------------------------------------------------------------------
// Proposals and budget.

struct Found {
  Encoding encoding;
  std::size_t begin;
  std::size_t end;
  std::string text;
};

struct Budget {
  std::size_t bytes_left;
  std::size_t segments_left;
  bool spent() const { return bytes_left == 0 || segments_left == 0; }
};

// Cuts a decoding that would pass the output budget, at a character boundary: a payload hidden
// at the start of a huge blob is still seen.
void truncate_utf8(std::string& text, std::size_t size) {
  if (text.size() <= size) return;
  while (size > 0 && (static_cast<unsigned char>(text[size]) & 0xC0) == 0x80) --size;
  text.resize(size);
}

class Proposals {
 public:
  Proposals(std::vector<Found>& out, std::size_t byte_cap) : out_(out), bytes_left_(byte_cap) {}
  bool room() const { return bytes_left_ > 0; }
  void add(Encoding e, std::size_t begin, std::size_t end, std::string text) {
    truncate_utf8(text, bytes_left_);
    if (text.empty()) {
      bytes_left_ = 0;
      return;
    }
    bytes_left_ -= text.size();
    out_.push_back(Found{e, begin, end, std::move(text)});
  }

 private:
  std::vector<Found>& out_;
  std::size_t bytes_left_;
};

int hex_value(char c) {
  if (!has_class(c, kHex)) return -1;
  if (c <= '9') return c - '0';
  return (c | 0x20) - 'a' + 10;
}

// ---------------------------------------------------------------------------------------------
// Base64 and plain hex runs.

int base64_value(char c) {
  if (!has_class(c, kBase64)) return -1;
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

// Decodes base64 characters (either alphabet; CR and LF skipped); false when the length is
// impossible (one character left over).
bool decode_base64(std::string_view s, std::string& out) {
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t chars = 0;
  for (const char c : s) {
    if (c == '\n' || c == '\r') continue;
    const int v = base64_value(c);
    if (v < 0) break;  // padding
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    ++chars;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return chars % 4 != 1;
}

bool decode_hex_run(std::string_view s, std::string& out) {
  if (s.size() % 2 != 0) return false;
  out.reserve(s.size() / 2);
  for (std::size_t i = 0; i < s.size(); i += 2) {
    const int hi = hex_value(s[i]);
    const int lo = hex_value(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

bool is_newline_at(std::string_view t, std::size_t j, std::size_t* length) {
  if (j < t.size() && t[j] == '\n') {
    *length = 1;
    return true;
  }
  if (j + 1 < t.size() && t[j] == '\r' && t[j + 1] == '\n') {
    *length = 2;
    return true;
  }
  return false;
}

void find_base64_and_hex(std::string_view t, const DecodeOptions& o, Proposals& p) {
  std::size_t i = 0;
  while (i < t.size() && p.room()) {
    if (!has_class(t[i], kBase64)) {
      ++i;
      continue;
    }
    // A run of the alphabet, continued across line breaks when the lines look like wrapped
    // base64 (MIME wraps at 76, PEM at 64: long lines whose length is a multiple of 4).
    std::size_t j = i;
    std::size_t line_start = i;
    std::size_t chars = 0;
    bool all_hex = true;
    bool wrapped = false;
    for (;;) {
      std::uint8_t classes = kHex;
      const std::size_t run_start = j;
      while (j < t.size() && has_class(t[j], kBase64)) {
        classes &= kClasses[static_cast<unsigned char>(t[j])];
        ++j;
      }
      chars += j - run_start;
      if ((classes & kHex) == 0) all_hex = false;
      std::size_t nl = 0;
      const std::size_t line = j - line_start;
      if (line >= 40 && line % 4 == 0 && is_newline_at(t, j, &nl) && j + nl < t.size() &&
          has_class(t[j + nl], kBase64)) {
        j += nl;
        line_start = j;
        wrapped = true;
        continue;
      }
      break;
    }
    std::size_t end = j;
    while (end < t.size() && end < j + 2 && t[end] == '=') ++end;
    const std::string_view run = t.substr(i, j - i);

    bool done = false;
    std::string_view hex = run;
    if (!wrapped && hex.size() > 2 && hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X')) {
      hex = hex.substr(2);  // "0x69676e6f7265..."
      all_hex = std::all_of(hex.begin(), hex.end(), [](char c) { return hex_value(c) >= 0; });
    }
    if (!wrapped && all_hex && hex.size() >= o.min_hex_chars && hex.size() % 2 == 0) {
      std::string decoded;
      if (decode_hex_run(hex, decoded) && printable_text(decoded)) {
        p.add(Encoding::Hex, i, j, std::move(decoded));
        done = true;
      }
    }
    if (!done && chars >= o.min_base64_chars) {
      std::string_view body = run;
      if (chars % 4 == 1) body.remove_suffix(1);  // a stray character glued to the payload
      std::string decoded;
      decoded.reserve(chars * 3 / 4 + 3);
      if (decode_base64(body, decoded) && printable_text(decoded)) p.add(Encoding::Base64, i, end, std::move(decoded));
    }
    i = end > i ? end : i + 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Hex escapes: "\x69\x67..." and "0x69 0x67, 0x6e ...".

void find_hex_escapes(std::string_view t, const DecodeOptions& o, Proposals& p) {
  const std::size_t min_bytes = std::max<std::size_t>(3, o.min_hex_chars / 4);
  std::size_t i = 0;
  while (i + 3 < t.size() && p.room()) {
    const bool backslash = t[i] == '\\' && (t[i + 1] == 'x' || t[i + 1] == 'X');
    const bool zero_x = t[i] == '0' && (t[i + 1] == 'x' || t[i + 1] == 'X') && (i == 0 || !is_letter(t[i - 1])) &&
                        !(i > 0 && t[i - 1] >= '0' && t[i - 1] <= '9');
    if (!(backslash || zero_x) || hex_value(t[i + 2]) < 0 || hex_value(t[i + 3]) < 0) {
      ++i;
      continue;
    }
    const char lead = t[i];
    std::string decoded;
    std::size_t j = i;
    std::size_t end = i;
    for (;;) {
      if (j + 3 >= t.size() || t[j] != lead || (t[j + 1] != 'x' && t[j + 1] != 'X') || hex_value(t[j + 2]) < 0 ||
          hex_value(t[j + 3]) < 0)
        break;
      // "0x414243" is one number, not an escape per byte: each escape holds exactly two digits.
      if (j + 4 < t.size() && (hex_value(t[j + 4]) >= 0 || is_letter(t[j + 4]))) break;
      decoded.push_back(static_cast<char>(hex_value(t[j + 2]) * 16 + hex_value(t[j + 3])));
      j += 4;
      end = j;
      if (lead == '0') {  // separators between 0x tokens: spaces and commas
        std::size_t k = j;
        while (k < t.size() && k < j + 3 && (t[k] == ' ' || t[k] == ',')) ++k;
        j = k;
      }
    }
    if (end == i) {
      ++i;
      continue;
    }
    if (decoded.size() >= min_bytes && printable_text(decoded)) p.add(Encoding::Hex, i, end, std::move(decoded));
    i = end;
  }
}

// ---------------------------------------------------------------------------------------------
// URL percent escapes.

bool percent_escape_at(std::string_view t, std::size_t i) {
  return i + 2 < t.size() && t[i] == '%' && hex_value(t[i + 1]) >= 0 && hex_value(t[i + 2]) >= 0;
}

void find_url_escapes(std::string_view t, Proposals& p) {
  std::size_t escapes = 0;
  for (std::size_t i = t.find('%'); i != std::string_view::npos && escapes < 3; i = t.find('%', i + 1))
    if (percent_escape_at(t, i)) ++escapes;
  if (escapes < 3) return;  // "50%" or one escaped space is ordinary text
  std::size_t i = 0;
  while (i < t.size() && p.room()) {
    if (is_space(t[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    std::size_t count = 0;
    while (j < t.size() && !is_space(t[j])) {
      if (percent_escape_at(t, j)) ++count;
      ++j;
    }
    if (count >= 2) {
      std::string decoded;
      decoded.reserve(j - i);
      for (std::size_t k = i; k < j;) {
        if (percent_escape_at(t, k)) {
          decoded.push_back(static_cast<char>(hex_value(t[k + 1]) * 16 + hex_value(t[k + 2])));
          k += 3;
        } else {
          decoded.push_back(t[k]);
          ++k;
        }
      }
      if (printable_text(decoded)) p.add(Encoding::Url, i, j, std::move(decoded));
    }
    i = j;
  }
}

// ---------------------------------------------------------------------------------------------
// HTML character references.

struct NamedReference {
  std::string_view name;
  char32_t cp;
};

constexpr NamedReference kNamedReferences[] = {
    {"amp", '&'},      {"lt", '<'},       {"gt", '>'},        {"quot", '"'},     {"apos", '\''},
    {"nbsp", 0xA0},    {"tab", '\t'},     {"newline", '\n'},  {"excl", '!'},     {"num", '#'},
    {"dollar", '$'},   {"percnt", '%'},   {"lpar", '('},      {"rpar", ')'},     {"ast", '*'},
    {"plus", '+'},     {"comma", ','},    {"period", '.'},    {"sol", '/'},      {"colon", ':'},
    {"semi", ';'},     {"equals", '='},   {"quest", '?'},     {"commat", '@'},   {"lsqb", '['},
    {"rsqb", ']'},     {"bsol", '\\'},    {"lowbar", '_'},    {"grave", '`'},    {"lcub", '{'},
    {"rcub", '}'},     {"verbar", '|'},   {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013},
    {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C},  {"rdquo", 0x201D}, {"copy", 0xA9},
    {"reg", 0xAE},     {"trade", 0x2122}, {"hyphen", 0x2010}, {"shy", 0xAD},     {"zwj", 0x200D},
    {"zwnj", 0x200C},
};

// A character reference at t[i] ('&'): its length and code point, or 0.
std::size_t html_reference_at(std::string_view t, std::size_t i, char32_t* cp, bool* numeric) {
  if (i + 2 >= t.size() || t[i] != '&') return 0;
  if (t[i + 1] == '#') {
    std::size_t k = i + 2;
    const bool hex = k < t.size() && (t[k] == 'x' || t[k] == 'X');
    if (hex) ++k;
    const std::size_t digits_begin = k;
    std::uint32_t value = 0;
    while (k < t.size() && k - digits_begin < 8) {
      const int d = hex ? hex_value(t[k]) : (t[k] >= '0' && t[k] <= '9' ? t[k] - '0' : -1);
      if (d < 0) break;
      value = value * (hex ? 16 : 10) + static_cast<std::uint32_t>(d);
      ++k;
    }
    if (k == digits_begin || value == 0 || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 0;
    if (k < t.size() && t[k] == ';') ++k;  // browsers accept numeric references without it
    *cp = value;
    *numeric = true;
    return k - i;
  }
  std::size_t k = i + 1;
  while (k < t.size() && k - i <= 8 && is_letter(t[k])) ++k;
  if (k >= t.size() || t[k] != ';') return 0;
  const std::string_view name = t.substr(i + 1, k - i - 1);
  for (const auto& ref : kNamedReferences) {
    if (ref.name == name) {
      *cp = ref.cp;
      *numeric = false;
      return k + 1 - i;
    }
  }
  return 0;
}

void find_html_references(std::string_view t, Proposals& p) {
  constexpr std::size_t kMaxGap = 32;
  std::size_t i = t.find('&');
  while (i != std::string_view::npos && p.room()) {
    char32_t cp = 0;
    bool numeric = false;
    std::size_t n = html_reference_at(t, i, &cp, &numeric);
    if (n == 0) {
      i = t.find('&', i + 1);
      continue;
    }
    // A cluster of references close together on one line.
    const std::size_t begin = i;
    std::size_t end = i + n;
    std::size_t refs = 1;
    std::size_t numeric_refs = numeric ? 1 : 0;
    std::string decoded;
    append_utf8(decoded, cp);
    for (;;) {
      const std::size_t next = t.find('&', end);
      if (next == std::string_view::npos || next - end > kMaxGap) break;
      const std::string_view gap = t.substr(end, next - end);
      if (gap.find('\n') != std::string_view::npos) break;
      const std::size_t m = html_reference_at(t, next, &cp, &numeric);
      if (m == 0) {
        // A lone '&': part of the gap; look for the next reference after it.
        const std::size_t after = t.find('&', next + 1);
        if (after == std::string_view::npos || after - end > kMaxGap) break;
        char32_t cp2 = 0;
        bool numeric2 = false;
        const std::size_t m2 = html_reference_at(t, after, &cp2, &numeric2);
        if (m2 == 0 || t.substr(end, after - end).find('\n') != std::string_view::npos) break;
        decoded.append(t.substr(end, after - end));
        append_utf8(decoded, cp2);
        end = after + m2;
        ++refs;
        if (numeric2) ++numeric_refs;
        continue;
      }
      decoded.append(gap);
      append_utf8(decoded, cp);
      end = next + m;
      ++refs;
      if (numeric) ++numeric_refs;
    }
    // One "&amp;" is ordinary escaped text; a string of references, or numeric ones, is encoding.
    if ((numeric_refs >= 2 || refs >= 3) && printable_text(decoded)) p.add(Encoding::Html, begin, end, std::move(decoded));
    i = t.find('&', end);
  }
}

// ---------------------------------------------------------------------------------------------
// Unicode tag characters (U+E0000..U+E007F, UTF-8 F3 A0 80 80 .. F3 A0 81 BF).

std::size_t tag_at(std::string_view t, std::size_t i, char32_t* cp) {
  if (i + 3 >= t.size()) return 0;
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(t[k]); };
  if (b(i) != 0xF3 || b(i + 1) != 0xA0 || (b(i + 2) != 0x80 && b(i + 2) != 0x81) || b(i + 3) < 0x80 || b(i + 3) > 0xBF)
    return 0;
  *cp = 0xE0000 + ((b(i + 2) & 0x3F) << 6) + (b(i + 3) & 0x3F);
  return 4;
}

void find_unicode_tags(std::string_view t, Proposals& p) {
  std::size_t i = t.find('\xF3');
  while (i != std::string_view::npos && p.room()) {
    char32_t cp = 0;
    if (tag_at(t, i, &cp) == 0) {
      i = t.find('\xF3', i + 1);
      continue;
    }
    const std::size_t begin = i;
    std::string decoded;
    while (tag_at(t, i, &cp) == 4) {
      if (cp >= 0xE0020 && cp <= 0xE007E) decoded.push_back(static_cast<char>(cp - 0xE0000));
      i += 4;
    }
    if (!decoded.empty()) p.add(Encoding::UnicodeTags, begin, i, std::move(decoded));
    i = t.find('\xF3', i);
  }
}

// ---------------------------------------------------------------------------------------------
// Whole-word transforms: ROT13, reversed text, leetspeak. Each word gets a verdict (is it English
// as written, after the transform, both, neither); a cluster of words that the transform turns
// into English becomes a candidate, and the candidate is kept when the text it spans reads as
// English after the transform (share >= 0.5, 3+ words) and not before (share < 0.3).

char rot13(char c) {
  if (c >= 'a' && c <= 'z') return static_cast<char>('a' + (c - 'a' + 13) % 26);
  if (c >= 'A' && c <= 'Z') return static_cast<char>('A' + (c - 'A' + 13) % 26);
  return c;
}

bool is_leet_char(char c) { return has_class(c, kLeet); }

char leet_plain(char c, bool one_as_l) {
  switch (c) {
    case '0': return 'o';
    case '1': return one_as_l ? 'l' : 'i';
    case '3': return 'e';
    case '4': return 'a';
    case '5': return 's';
    case '7': return 't';
    case '@': return 'a';
    case '$': return 's';
    case '!': return 'i';
    default: return c;
  }
}

// The reading of a leet token: '1' is 'i' or 'l' (the first combination that is a word wins;
// all 'i' otherwise). Empty when the token holds a character that has no reading (a '2').
std::string leet_reading(std::string_view token, bool* known) {
  std::size_t ones = 0;
  for (const char c : token) {
    if (c == '1') ++ones;
    if (c >= '0' && c <= '9' && !is_leet_char(c)) {
      *known = false;
      return {};
    }
  }
  const unsigned combinations = 1u << std::min<std::size_t>(ones, 4);
  std::string reading(token.size(), ' ');
  for (unsigned mask = 0; mask < combinations; ++mask) {
    unsigned bit = 0;
    for (std::size_t k = 0; k < token.size(); ++k) {
      const char c = token[k];
      bool as_l = false;
      if (c == '1') {
        as_l = bit < 4 && ((mask >> bit) & 1u) != 0;
        ++bit;
      }
      reading[k] = leet_plain(c, as_l);
    }
    if (known_word(reading)) {
      *known = true;
      return reading;
    }
  }
  for (std::size_t k = 0; k < token.size(); ++k) reading[k] = leet_plain(token[k], false);
  *known = false;
  return reading;
}

enum class WordTransform { Rot13, Reversed, Leetspeak };

std::string transform_span(std::string_view span, WordTransform kind) {
  std::string out;
  out.reserve(span.size());
  if (kind == WordTransform::Rot13) {
    for (const char c : span) out.push_back(rot13(c));
  } else if (kind == WordTransform::Reversed) {
    // By code points, so that UTF-8 stays UTF-8; ill-formed bytes become U+FFFD.
    std::vector<char32_t> cps;
    cps.reserve(span.size());
    for (std::size_t i = 0; i < span.size();) {
      char32_t cp = 0;
      const std::size_t n = utf8_sequence(span, i, &cp);
      cps.push_back(n == 0 ? 0xFFFD : cp);
      i += n == 0 ? 1 : n;
    }
    for (auto it = cps.rbegin(); it != cps.rend(); ++it) append_utf8(out, *it);
  } else {
    std::size_t i = 0;
    while (i < span.size()) {
      const char c = span[i];
      if (!has_class(c, kLetter | kDigit | kLeet)) {
        out.push_back(c);
        ++i;
        continue;
      }
      std::size_t j = i;
      while (j < span.size() && has_class(span[j], kLetter | kDigit | kLeet)) ++j;
      std::size_t token_end = j;
      while (token_end > i && span[token_end - 1] == '!') --token_end;  // "hello!" ends a sentence
      bool known = false;
      const std::string reading = leet_reading(span.substr(i, token_end - i), &known);
      if (reading.empty()) {
        out.append(span.substr(i, token_end - i));
      } else {
        out.append(reading);
      }
      out.append(span.substr(token_end, j - token_end));
      i = j;
    }
  }
  return out;
}

// Whether `word` reads as a dictionary word after the transform.
bool known_after(std::string_view word, WordTransform kind) {
  if (word.size() < 2 || word.size() > kMaxWord) return false;
  char buffer[kMaxWord];
  const std::size_t n = word.size();
  switch (kind) {
    case WordTransform::Rot13:
      for (std::size_t i = 0; i < n; ++i) buffer[i] = rot13(word[i]);
      return known_word(std::string_view(buffer, n));
    case WordTransform::Reversed:
      for (std::size_t i = 0; i < n; ++i) buffer[i] = word[n - 1 - i];
      return known_word(std::string_view(buffer, n));
    case WordTransform::Leetspeak: {
      if (std::none_of(word.begin(), word.end(), is_leet_char)) return known_word(word);
      bool known = false;
      (void)leet_reading(word, &known);
      return known;
    }
  }
  return false;
}

struct Word {
  std::size_t begin;
  std::size_t end;
  bool known;       // English as written
  bool helped[2];   // not English as written, English after the transform (ROT13 or reversed / leetspeak)
};

// The words of one line: letter runs for ROT13 and reversed text (helped[0] and helped[1]); for
// leetspeak, runs of letters, digits and leet symbols (a '!' at the end is punctuation) (helped[0]).
// Only words that are not English as written are transformed here; English words are looked at
// only when a cluster reaches them.
void collect_words(std::string_view t, std::size_t line_begin, std::size_t line_end, bool leet,
                   std::vector<Word>& words) {
  words.clear();
  const std::uint8_t word_class = leet ? (kLetter | kDigit | kLeet) : kLetter;
  std::size_t i = line_begin;
  while (i < line_end) {
    if (!has_class(t[i], word_class)) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < line_end && has_class(t[j], word_class)) ++j;
    std::size_t end = j;
    if (leet)
      while (end > i && t[end - 1] == '!') --end;
    const std::string_view w = t.substr(i, end - i);
    // Letters glued to digits are part of an identifier or a hex string ("882ab1f"), not a word.
    const auto identifier = [](char c) { return has_class(c, kDigit) || c == '_'; };
    const bool glued = !leet && ((i > line_begin && identifier(t[i - 1])) || (j < line_end && identifier(t[j])));
    if (w.size() >= 2 && !glued) {
      Word word{i, end, false, {false, false}};
      const bool letters_only = !leet || std::all_of(w.begin(), w.end(), is_letter);
      word.known = letters_only && known_word(w);
      if (!word.known) {
        if (leet) {
          // A number alone ("41", "45") is not leetspeak, even when its reading is a word.
          word.helped[0] = !letters_only && std::any_of(w.begin(), w.end(), is_letter) &&
                           known_after(w, WordTransform::Leetspeak);
        } else {
          word.helped[0] = known_after(w, WordTransform::Rot13);
          word.helped[1] = known_after(w, WordTransform::Reversed);
        }
      }
      words.push_back(word);
    }
    i = j;
  }
}

// Clusters of words that `kind` makes readable, each checked as a whole.
void find_clusters(std::string_view t, std::size_t line_begin, std::size_t line_end, const std::vector<Word>& words,
                   int helped_index, WordTransform kind, Proposals& p) {
  constexpr std::size_t kMaxQuietWords = 3;  // words inside a cluster that the transform does not help
  const Encoding encoding = kind == WordTransform::Rot13      ? Encoding::Rot13
                            : kind == WordTransform::Reversed ? Encoding::Reversed
                                                              : Encoding::Leetspeak;
  std::size_t k = 0;
  while (k < words.size() && p.room()) {
    if (!words[k].helped[helped_index]) {
      ++k;
      continue;
    }
    // Helped words, with at most a few words between them that the transform leaves unreadable,
    // and no English word that the transform would spoil.
    std::size_t last = k;
    std::size_t quiet = 0;
    for (std::size_t m = k + 1; m < words.size(); ++m) {
      const Word& w = words[m];
      if (w.known && !known_after(t.substr(w.begin, w.end - w.begin), kind)) break;
      if (w.helped[helped_index]) {
        last = m;
        quiet = 0;
      } else if (++quiet > kMaxQuietWords) {
        break;
      }
    }
    std::size_t begin = words[k].begin;
    std::size_t end = words[last].end;
    // Take in punctuation glued to the cluster (".tpmorp" starts with its full stop).
    while (begin > line_begin && static_cast<unsigned char>(t[begin - 1]) < 0x80 && !is_space(t[begin - 1]) &&
           !is_letter(t[begin - 1]))
      --begin;
    while (end < line_end && static_cast<unsigned char>(t[end]) < 0x80 && !is_space(t[end]) && !is_letter(t[end]))
      ++end;
    const std::string_view span = t.substr(begin, end - begin);
    if (count_words(span).share() < 0.3) {
      std::string decoded = transform_span(span, kind);
      const WordCount after = count_words(decoded);
      // Three different words: "OS OS OS" reversed is "so so so", which proves nothing.
      if (after.words >= 3 && after.distinct_known >= 3 && after.share() >= 0.5 && printable_text(decoded))
        p.add(encoding, begin, end, std::move(decoded));
    }
    k = last + 1;
  }
}

void find_word_transforms(std::string_view t, Proposals& p) {
  std::vector<Word> words;
  std::size_t line_begin = 0;
  while (line_begin < t.size() && p.room()) {
    std::size_t line_end = t.find('\n', line_begin);
    if (line_end == std::string_view::npos) line_end = t.size();
    collect_words(t, line_begin, line_end, false, words);
    find_clusters(t, line_begin, line_end, words, 0, WordTransform::Rot13, p);
    find_clusters(t, line_begin, line_end, words, 1, WordTransform::Reversed, p);
    const auto first = t.begin() + static_cast<std::ptrdiff_t>(line_begin);
    const auto last = t.begin() + static_cast<std::ptrdiff_t>(line_end);
    if (std::any_of(first, last, [](char c) { return has_class(c, kLeet); })) {
      collect_words(t, line_begin, line_end, true, words);
      find_clusters(t, line_begin, line_end, words, 0, WordTransform::Leetspeak, p);
    }
    line_begin = line_end + 1;
  }
}

// ---------------------------------------------------------------------------------------------

void decode_level(std::string_view text, const DecodeOptions& options, const std::vector<Encoding>& prefix,
                  std::size_t parent_begin, std::size_t parent_end, Budget& budget,
                  std::vector<DecodedSegment>& out) {
  if (budget.spent() || text.empty()) return;
  std::vector<Found> found;
  Proposals proposals(found, budget.bytes_left);
  find_base64_and_hex(text, options, proposals);
  find_hex_escapes(text, options, proposals);
  find_url_escapes(text, proposals);
  find_html_references(text, proposals);
  find_unicode_tags(text, proposals);
  find_word_transforms(text, proposals);
  std::stable_sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end > b.end;
  });
  const bool top = prefix.empty();
  for (auto& f : found) {
    if (budget.spent()) return;
    truncate_utf8(f.text, budget.bytes_left);
    if (f.text.empty()) {
      budget.bytes_left = 0;
      return;
    }
    if (f.text == text) continue;  // a decoding that changes nothing
    DecodedSegment segment;
    segment.chain = prefix;
    segment.chain.push_back(f.encoding);
    segment.begin = top ? f.begin : parent_begin;
    segment.end = top ? f.end : parent_end;
    segment.text = std::move(f.text);
    budget.bytes_left -= segment.text.size();
    --budget.segments_left;
    out.push_back(std::move(segment));
    const std::size_t index = out.size() - 1;
    if (static_cast<int>(out[index].chain.size()) < options.max_depth) {
      const std::vector<Encoding> chain = out[index].chain;
      const std::string inner = out[index].text;  // `out` may grow below
      decode_level(inner, options, chain, out[index].begin, out[index].end, budget, out);
    }
  }
}

}  // namespace

std::string_view encoding_name(Encoding encoding) {
  switch (encoding) {
    case Encoding::Base64: return "base64";
    case Encoding::Hex: return "hex";
    case Encoding::Rot13: return "rot13";
    case Encoding::Leetspeak: return "leetspeak";
    case Encoding::Url: return "url";
    case Encoding::Html: return "html";
    case Encoding::Reversed: return "reversed";
    case Encoding::UnicodeTags: return "unicode-tags";
  }
  return "unknown";
}

double english_word_share(std::string_view text) { return count_words(text).share(); }

std::vector<DecodedSegment> decode_smuggled(std::string_view text, const DecodeOptions& options) {
  std::vector<DecodedSegment> out;
  if (options.max_depth <= 0 || options.max_segments == 0 || options.max_output_bytes == 0) return out;
  // Each level decodes what the one above produced, so the recursion is as deep as max_depth;
  // a caller's huge value must not become a deep stack.
  DecodeOptions bounded = options;
  bounded.max_depth = std::min(options.max_depth, 16);
  Budget budget{options.max_output_bytes, options.max_segments};
  decode_level(text, bounded, {}, 0, text.size(), budget, out);
  return out;
}

}  // namespace aegis::guard
