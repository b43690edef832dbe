#include "json.h"

#include <cmath>
#include <cstdlib>

namespace facet {

class JsonParser {
 public:
  explicit JsonParser(const std::string &text) : s_(text) {}

  Json document()
  {
    Json value = parse_value(0);
    skip_space();
    if (pos_ != s_.size()) fail("trailing characters after the JSON value");
    return value;
  }

 private:
  const std::string &s_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string &what) const
  {
    throw JsonError("JSON: " + what + " at byte " + std::to_string(pos_));
  }
  void skip_space()
  {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool consume(const char *word)
  {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }

  // The items of an object or array after its opening bracket, separated by commas, up to `close`.
  template <typename Item> void parse_items(char close, Item item)
  {
    ++pos_;
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == close) {
      ++pos_;
      return;
    }
    while (true) {
      item();
      skip_space();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == close) {
        ++pos_;
        return;
      }
      fail(std::string("expected ',' or '") + close + "'");
    }
  }

  Json parse_value(int depth)
  {
    if (depth > 64) fail("nesting too deep");
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    Json v;
    char c = s_[pos_];
    if (c == '{') {
      v.kind_ = Json::Kind::Object;
      parse_items('}', [&] {
        skip_space();
        if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string key");
        std::string key = parse_string();
        skip_space();
        if (pos_ >= s_.size() || s_[pos_] != ':') fail("expected ':'");
        ++pos_;
        v.object_[key] = parse_value(depth + 1);
      });
      return v;
    }
    if (c == '[') {
      v.kind_ = Json::Kind::Array;
      parse_items(']', [&] { v.array_.push_back(parse_value(depth + 1)); });
      return v;
    }
    if (c == '"') {
      v.kind_ = Json::Kind::String;
      v.string_ = parse_string();
      return v;
    }
    if (consume("true")) {
      v.kind_ = Json::Kind::Bool;
      v.bool_ = true;
      return v;
    }
    if (consume("false")) {
      v.kind_ = Json::Kind::Bool;
      return v;
    }
    if (consume("null")) return v;
    const char *start = s_.c_str() + pos_;
    char *end = nullptr;
    double number = std::strtod(start, &end);
    if (end == start) fail("unexpected character");
    pos_ += static_cast<size_t>(end - start);
    v.kind_ = Json::Kind::Number;
    v.number_ = number;
    return v;
  }

  static void append_utf8(std::string &out, unsigned code)
  {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  unsigned parse_hex4()
  {
    if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned code = 0;
    for (int k = 0; k < 4; ++k) {
      char h = s_[pos_++];
      code <<= 4;
      if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
      else fail("bad \\u escape");
    }
    return code;
  }

  std::string parse_string()
  {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = parse_hex4();
          if (code >= 0xD800 && code < 0xDC00 && s_.compare(pos_, 2, "\\u") == 0) {  // surrogate pair
            pos_ += 2;
            unsigned low = parse_hex4();
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default: fail("bad escape");
      }
    }
  }
};

Json Json::parse(const std::string &text) { return JsonParser(text).document(); }

bool Json::has(const std::string &key) const { return kind_ == Kind::Object && object_.count(key) > 0; }

const Json &Json::operator[](const std::string &key) const
{
  if (kind_ != Kind::Object) throw JsonError("JSON: not an object (looking up '" + key + "')");
  auto it = object_.find(key);
  if (it == object_.end()) throw JsonError("JSON: missing key '" + key + "'");
  return it->second;
}

const Json &Json::operator[](size_t index) const
{
  if (kind_ != Kind::Array || index >= array_.size()) throw JsonError("JSON: index out of range");
  return array_[index];
}

size_t Json::size() const
{
  if (kind_ == Kind::Array) return array_.size();
  if (kind_ == Kind::Object) return object_.size();
  throw JsonError("JSON: size() of a scalar");
}

double Json::number() const
{
  if (kind_ != Kind::Number) throw JsonError("JSON: expected a number");
  return number_;
}

long long Json::integer() const
{
  double v = number();
  if (std::floor(v) != v) throw JsonError("JSON: expected an integer");
  return static_cast<long long>(v);
}

bool Json::boolean() const
{
  if (kind_ != Kind::Bool) throw JsonError("JSON: expected true or false");
  return bool_;
}

const std::string &Json::string() const
{
  if (kind_ != Kind::String) throw JsonError("JSON: expected a string");
  return string_;
}

std::vector<std::string> Json::strings() const
{
  if (kind_ != Kind::Array) throw JsonError("JSON: expected an array of strings");
  std::vector<std::string> out;
  for (const Json &item : array_) out.push_back(item.string());
  return out;
}

const std::map<std::string, Json> &Json::object() const
{
  if (kind_ != Kind::Object) throw JsonError("JSON: expected an object");
  return object_;
}

}  // namespace facet
