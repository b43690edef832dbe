/* A small JSON reader for the model file's header (objects, arrays, strings,
 * numbers, booleans, null). Only what the runtime needs; no writer. */
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace facet {

struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Json {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  static Json parse(const std::string &text);  // throws JsonError

  Kind kind() const { return kind_; }
  bool is_object() const { return kind_ == Kind::Object; }
  bool has(const std::string &key) const;
  // Typed access; a missing key or a wrong kind throws JsonError naming the key.
  const Json &operator[](const std::string &key) const;
  const Json &operator[](size_t index) const;
  size_t size() const;
  double number() const;
  long long integer() const;
  bool boolean() const;
  const std::string &string() const;
  std::vector<std::string> strings() const;  // an array of strings
  const std::map<std::string, Json> &object() const;

 private:
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Json> array_;
  std::map<std::string, Json> object_;
  friend class JsonParser;
};

}  // namespace facet
