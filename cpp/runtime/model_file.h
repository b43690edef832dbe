/* Reading a Facet model file (export/README.md, "The model file") with the checks
 * facet.modelfile makes, and the same messages: magic, format version, sizes, header
 * and payload checksums, required header keys, the section table. No Python. */
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "json.h"

namespace facet {

// A model file that cannot be used; the message names the file and the fix.
struct ModelFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The padding ladder of export/README.md, "Shape policy" (facet.buckets).
struct BucketPolicy {
  int steps_per_octave = 4;
  long min_atoms = 8;
  long min_edges = 64;
};

long ladder_ceil(long x, int steps_per_octave, long minimum);
// (padded atoms, padded edges): ladder rungs, plus one padding atom after rounding.
std::pair<long, long> padded_sizes(long n_atoms, long n_edges, const BucketPolicy &policy);

struct ModelFile {
  std::string path;
  uint32_t format_version = 0;
  Json header;
  std::vector<std::string> elements;  // model order: species index i is elements[i]
  double cutoff = 0.0;                // Å: edges longer than this contribute exactly zero
  int num_layers = 0;
  std::string dtype;                  // "float32" or "float64"
  std::vector<std::string> platforms;
  std::string jax_version;
  BucketPolicy buckets;
  double padding_edge_length = 0.0;   // the vector length of padding edges (Å)
  std::map<std::string, std::string> sections;  // name -> bytes

  // Reads and checks the whole file; throws ModelFileError.
  static ModelFile read(const std::string &path);
  bool has_section(const std::string &name) const { return sections.count(name) > 0; }
  const std::string &section(const std::string &name) const;
};

}  // namespace facet
