/* The Facet runtime without Python: a model file's StableHLO template compiled and
 * run through XLA's PJRT C API (pjrt_c_api.h), one executable per shape bucket.
 *
 *   ModelFile file = ModelFile::read("model.hlo");
 *   PjrtModel model(file, PjrtOptions{});                   // the plugin, the device
 *   model.evaluate(edge_vectors, senders, receivers, n_edges, species, energy_mask,
 *                  n_atoms, atom_energies, edge_gradients);  // export/README.md's contract
 *
 * Inputs are padded to the bucket of facet.buckets (a compiled bucket one rung larger is
 * reused, as facet.runtime.ModelRunner does) and cast to the model's dtype; outputs come
 * back in float64. Compiled executables are cached on disk (PjrtOptions::cache_dir). */
#pragma once

#include <array>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "model_file.h"

struct PJRT_Api;
struct PJRT_Client;
struct PJRT_Device;
struct PJRT_Error;
struct PJRT_LoadedExecutable;

namespace facet {

// The plugin, PJRT or a program failed; the message says which and what to do.
struct PjrtError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct PjrtOptions {
  std::string plugin;     // the PJRT plugin library; "" = FACET_PJRT_PLUGIN, else the one found at build time
  std::string device = "cpu";  // "cpu" or "cuda": which template of the file and which plugin kind
  std::string cache_dir;  // compiled executables; "" = $FACET_CACHE_DIR/pjrt or ~/.cache/facet/pjrt; "off" = none
};

// One loaded plugin library (dlopen + GetPjrtApi + PJRT_Plugin_Initialize), shared by models.
class PjrtPlugin {
 public:
  static std::shared_ptr<PjrtPlugin> load(const std::string &library);
  const PJRT_Api *api() const { return api_; }
  const std::string &library() const { return library_; }
  // Throws PjrtError("<what>: <PJRT's message>") when err is not null (and frees it).
  void check(PJRT_Error *err, const std::string &what) const;
  // Frees an error that changes nothing (cleanup, an optional cache).
  void discard(PJRT_Error *err) const;

 private:
  const PJRT_Api *api_ = nullptr;
  std::string library_;
  void *handle_ = nullptr;
};

class PjrtModel {
 public:
  PjrtModel(const ModelFile &file, const PjrtOptions &options);
  ~PjrtModel();
  PjrtModel(const PjrtModel &) = delete;
  PjrtModel &operator=(const PjrtModel &) = delete;

  // Atom energies (n_atoms) and dE/d(edge vector) (n_edges x 3), float64, for edge vectors
  // x_sender - x_receiver + shift (n_edges x 3), species indices into file().elements, and
  // an energy mask (1 for atoms whose energy counts, 0 for ghosts).
  void evaluate(const double *edge_vectors, const int *senders, const int *receivers, long n_edges,
                const int *species, const double *energy_mask, long n_atoms, double *atom_energies,
                double *edge_gradients);

  // The per-layer programs of facet.stages (several MPI ranks exchange node features between
  // them): stage_names() lists forward_k, backward_k (k < num_layers - 1) and last, in the
  // file's order; empty when the file has none. feature_size() is the width of a node's
  // features (and of their cotangents).
  const std::vector<std::string> &stage_names() const { return stage_names_; }
  int feature_size() const { return feature_size_; }
  // Runs stage program `name` on the graph, whose first n_owned atoms are owned (every
  // receiver among them) and the rest ghosts. node_inputs are its inputs after the graph, in
  // the header's order (features: n_atoms x feature_size; cotangent: n_owned x feature_size;
  // energy_mask: n_owned); outputs receive its outputs, float64, unpadded (features: n_owned x
  // feature_size, atom_energies: n_owned, cotangent: n_atoms x feature_size, dE_dedge:
  // n_edges x 3).
  void run_stage(const std::string &name, const double *edge_vectors, const int *senders, const int *receivers,
                 long n_edges, const int *species, long n_atoms, long n_owned,
                 const std::vector<const double *> &node_inputs, const std::vector<double *> &outputs);

  // (padded atoms, padded edges) a system of this size runs in (ModelRunner.bucket_for's rule).
  std::pair<long, long> bucket_for(long n_atoms, long n_edges) const;
  // Compiles (or loads from the cache) the bucket for a system of this size; returns the bucket.
  std::pair<long, long> precompile(long n_atoms, long n_edges);

  const ModelFile &file() const { return file_; }
  const std::string &plugin_library() const { return plugin_->library(); }
  int num_compilations() const { return num_compilations_; }  // buckets compiled here (not cached)
  int num_cache_loads() const { return num_cache_loads_; }
  double compile_seconds() const { return compile_seconds_; }
  // Seconds spent in PJRT_LoadedExecutable_Execute and the wait for its completion (the bare
  // execute, without input and output copies), summed over every call since construction.
  double execute_seconds() const { return execute_seconds_; }
  std::vector<std::pair<long, long>> buckets_seen() const;
  // A committee file (facet.committee) returns its members' spread too; after evaluate():
  // each atom's energy standard deviation (n_atoms), each member's forces on every node
  // (members x n_atoms x 3, member-major) and each member's energy.
  int committee_members() const { return committee_members_; }
  const std::vector<double> &atom_energy_std() const { return atom_energy_std_; }
  const std::vector<double> &member_forces() const { return member_forces_; }
  const std::vector<double> &member_energies() const { return member_energies_; }

 private:
  using Shape = std::array<long, 3>;
  // One program of the file: the model (index 0) or a stage program.
  struct Program {
    std::string name;                          // "model", or the stage's name
    std::string template_text;                 // StableHLO template (facet.pjrt_program)
    std::string cache_key_prefix;              // identifies template + plugin + host in the cache
    std::vector<std::string> inputs, outputs;  // stages: after the graph inputs
    std::map<Shape, PJRT_LoadedExecutable *> executables;
  };
  // The model's bucket is (atoms, edges, 0); a stage program's (owned, edges, ghosts).
  PJRT_LoadedExecutable *executable(Program &program, long n_pad, long e_pad, long g_pad = 0);
  // Pads and casts the graph inputs into the staging buffers (export/README.md's padding).
  void stage_graph(long n_pad, long e_pad, const double *edge_vectors, const int *senders, const int *receivers,
                   long n_edges, const int *species, long n_atoms);
  struct HostArray {
    const void *data;
    int type;  // PJRT_Buffer_Type
    std::vector<int64_t> dims;
  };
  // Runs exe on these inputs; returns each output's raw bytes (sizes in bytes given).
  std::vector<std::vector<char>> execute(PJRT_LoadedExecutable *exe, const std::vector<HostArray> &inputs,
                                         const std::vector<size_t> &output_bytes, const std::string &what);

  ModelFile file_;
  PjrtOptions options_;
  std::shared_ptr<PjrtPlugin> plugin_;
  PJRT_Client *client_ = nullptr;
  PJRT_Device *device_ = nullptr;
  std::string compile_options_;
  std::vector<Program> programs_;  // [0] the model, then the stage programs
  std::vector<std::string> stage_names_;
  int feature_size_ = 0;
  std::vector<std::vector<char>> in_nodes_;  // staging of the stage programs' node inputs
  int num_compilations_ = 0;
  int num_cache_loads_ = 0;
  double compile_seconds_ = 0.0;
  double execute_seconds_ = 0.0;
  std::vector<char> in_floats_, in_mask_;  // staging in the model dtype
  std::vector<int> in_senders_, in_receivers_, in_species_;
  int committee_members_ = 0;
  std::vector<double> atom_energy_std_, member_forces_, member_energies_;
};

// The plugin library used when none is given: $FACET_PJRT_PLUGIN, else the path found at
// build time for this device kind ("" when there is none).
std::string default_plugin_library(const std::string &device);

}  // namespace facet
