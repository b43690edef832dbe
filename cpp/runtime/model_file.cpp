#include "model_file.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "sha256.h"

namespace facet {
namespace {

const char MAGIC[8] = {'F', 'A', 'C', 'E', 'T', 'M', 'D', '\0'};
const size_t PREAMBLE_SIZE = 64;
const uint64_t MAX_HEADER_BYTES = uint64_t(64) << 20;
const uint32_t SUPPORTED_VERSIONS[] = {1, 2};
const char *EXPORT_HINT = "Export a model with `python -m facet.export CHECKPOINT -o model.hlo`.";
const char *REQUIRED_KEYS[] = {"format_version", "elements", "cutoff", "num_layers", "dtype", "platforms",
                               "jax_version", "calling_convention_version", "payload_sha256", "payload_bytes"};

template <typename T> T read_le(const char *p)
{
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= T(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::string hex(const char *p, size_t n)
{
  static const char *digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(p[i]);
    out += digits[c >> 4];
    out += digits[c & 0xF];
  }
  return out;
}

std::string guess_kind(const std::string &data)
{
  if (data.empty()) return "";
  auto c = static_cast<unsigned char>(data[0]);
  if ((c >= 0x80 && c <= 0x8F) || c == 0xDE || c == 0xDF)
    return " It looks like msgpack data (a training checkpoint?): export it first.";
  if (data.compare(0, 4, "PK\x03\x04") == 0) return " It looks like a zip archive (a checkpoint or another package's model?).";
  size_t first = data.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (data[first] == '{' || data[first] == '[')) return " It looks like a JSON/text file.";
  return "";
}

}  // namespace

long ladder_ceil(long x, int steps_per_octave, long minimum)
{
  long s = steps_per_octave;
  long v = std::max({x, minimum, 1L});
  long step = 1;
  while (v > 2 * s * step) step <<= 1;
  return (v + step - 1) / step * step;
}

std::pair<long, long> padded_sizes(long n_atoms, long n_edges, const BucketPolicy &p)
{
  return {ladder_ceil(n_atoms, p.steps_per_octave, p.min_atoms) + 1, ladder_ceil(n_edges, p.steps_per_octave, p.min_edges)};
}

const std::string &ModelFile::section(const std::string &name) const
{
  auto it = sections.find(name);
  if (it == sections.end())
    throw ModelFileError(path + ": no '" + name + "' section (format version " + std::to_string(format_version) + ")");
  return it->second;
}

ModelFile ModelFile::read(const std::string &path)
{
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw ModelFileError(path + ": no such model file. " + EXPORT_HINT);
  if (S_ISDIR(st.st_mode)) throw ModelFileError(path + ": is a directory, not a Facet model file. " + EXPORT_HINT);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelFileError(path + ": cannot read the model file.");
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string data = buffer.str();

  if (data.size() < sizeof(MAGIC) || std::memcmp(data.data(), MAGIC, sizeof(MAGIC)) != 0) {
    if (!data.empty() && data.size() < sizeof(MAGIC) && std::memcmp(data.data(), MAGIC, data.size()) == 0)
      throw ModelFileError(path + ": truncated Facet model file (" + std::to_string(data.size()) +
                           " bytes). Copy the file again or re-export it.");
    throw ModelFileError(path + ": not a Facet model file (missing the FACETMD signature)." + guess_kind(data) + " " +
                         EXPORT_HINT);
  }
  if (data.size() < PREAMBLE_SIZE)
    throw ModelFileError(path + ": truncated Facet model file (" + std::to_string(data.size()) +
                         " bytes, shorter than the 64-byte preamble). Copy the file again or re-export it.");
  ModelFile m;
  m.path = path;
  m.format_version = read_le<uint32_t>(data.data() + 8);
  uint64_t header_len = read_le<uint64_t>(data.data() + 16);
  uint64_t payload_len = read_le<uint64_t>(data.data() + 24);
  std::string header_sha = hex(data.data() + 32, 32);
  bool supported = std::find(std::begin(SUPPORTED_VERSIONS), std::end(SUPPORTED_VERSIONS), m.format_version) !=
      std::end(SUPPORTED_VERSIONS);
  if (!supported) {
    bool newer = m.format_version > 2;
    throw ModelFileError(path + ": unsupported Facet model format version " + std::to_string(m.format_version) +
                         " (this runtime reads versions 1 and 2). " +
                         (newer ? "The file was written by a newer Facet: upgrade facet-md, or re-export the "
                                  "checkpoint with this version."
                                : "Re-export the checkpoint with this version of Facet."));
  }
  uint64_t expected = PREAMBLE_SIZE + header_len + payload_len;
  if (header_len > MAX_HEADER_BYTES || data.size() < expected)
    throw ModelFileError(path + ": truncated Facet model file: " + std::to_string(data.size()) + " bytes, expected " +
                         std::to_string(expected) +
                         ". The copy or download was probably incomplete: copy the file again or re-export it.");
  if (data.size() > expected)
    throw ModelFileError(path + ": corrupted Facet model file: " + std::to_string(data.size() - expected) +
                         " unexpected bytes after the end of the model (" + std::to_string(expected) +
                         " bytes). Copy the file again or re-export it.");
  const char *header_bytes = data.data() + PREAMBLE_SIZE;
  if (sha256_hex(header_bytes, header_len) != header_sha)
    throw ModelFileError(path + ": checksum mismatch in the header: the file is corrupted. "
                                "Copy the file again or re-export it.");
  try {
    m.header = Json::parse(std::string(header_bytes, header_len));
  } catch (const JsonError &e) {
    throw ModelFileError(path + ": unreadable header (" + e.what() + "). Re-export the model.");
  }
  if (!m.header.is_object()) throw ModelFileError(path + ": malformed header (not a JSON object). Re-export the model.");
  std::string missing;
  for (const char *key : REQUIRED_KEYS)
    if (!m.header.has(key)) missing += std::string(missing.empty() ? "" : ", ") + "'" + key + "'";
  if (!missing.empty()) throw ModelFileError(path + ": malformed header, missing [" + missing + "]. Re-export the model.");
  try {
    if (m.header["format_version"].integer() != m.format_version ||
        uint64_t(m.header["payload_bytes"].integer()) != payload_len)
      throw ModelFileError(path + ": header and preamble disagree (format version or payload size): the file "
                                  "is corrupted. Re-export the model.");
    const char *payload = header_bytes + header_len;
    if (sha256_hex(payload, payload_len) != m.header["payload_sha256"].string())
      throw ModelFileError(path + ": checksum mismatch: the exported program is corrupted (sha256 differs "
                                  "from the one recorded at export). Copy the file again or re-export it.");
    m.elements = m.header["elements"].strings();
    m.cutoff = m.header["cutoff"].number();
    m.num_layers = int(m.header["num_layers"].integer());
    m.dtype = m.header["dtype"].string();
    m.platforms = m.header["platforms"].strings();
    m.jax_version = m.header["jax_version"].string();
    if (m.dtype != "float32" && m.dtype != "float64")
      throw ModelFileError(path + ": unsupported model dtype '" + m.dtype + "'. Re-export the model.");
    if (m.header.has("shape_policy") && m.header["shape_policy"].has("buckets")) {
      const Json &b = m.header["shape_policy"]["buckets"];
      if (b.has("steps_per_octave")) m.buckets.steps_per_octave = int(b["steps_per_octave"].integer());
      if (b.has("min_atoms")) m.buckets.min_atoms = long(b["min_atoms"].integer());
      if (b.has("min_edges")) m.buckets.min_edges = long(b["min_edges"].integer());
    }
    double graph_cutoff = m.header.has("graph_cutoff") ? m.header["graph_cutoff"].number() : m.cutoff;
    m.padding_edge_length = 2.0 * std::max(m.cutoff, graph_cutoff) + 1.0;
    if (m.header.has("padding") && m.header["padding"].has("edge_length"))
      m.padding_edge_length = m.header["padding"]["edge_length"].number();
    if (!m.header.has("sections")) {
      m.sections["jax_export"] = std::string(payload, payload_len);
    } else {
      const Json &table = m.header["sections"];
      for (size_t i = 0; i < table.size(); ++i) {
        const Json &entry = table[i];
        std::string name = entry["name"].string();
        long long offset = entry["offset"].integer(), size = entry["bytes"].integer();
        if (offset < 0 || size < 0 || uint64_t(offset + size) > payload_len)
          throw ModelFileError(path + ": section '" + name + "' lies outside the payload: the file is corrupted. "
                                      "Re-export the model.");
        m.sections[name] = std::string(payload + offset, size_t(size));
        if (sha256_hex(m.sections[name].data(), m.sections[name].size()) != entry["sha256"].string())
          throw ModelFileError(path + ": checksum mismatch in section '" + name + "': the file is corrupted. "
                                      "Copy the file again or re-export it.");
      }
    }
  } catch (const JsonError &e) {
    throw ModelFileError(path + ": malformed header (" + e.what() + "). Re-export the model.");
  }
  return m;
}

}  // namespace facet
