/* Facet-MD: the pair style's view of a model, whichever runtime runs it.
 *
 *   runtime pjrt   (default) the model file's StableHLO program through a PJRT plugin
 *                  (runtime/pjrt_runtime.h): no Python in the process;
 *   runtime python the file's jax program through an embedded interpreter
 *                  (python_bridge.h, in its own library facet_python_runner.so, loaded
 *                  only then); also every `python:MODULE:CALLABLE[:ARG]` runner factory.
 */
#ifndef FACET_MODEL_RUNNER_H
#define FACET_MODEL_RUNNER_H

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace FacetMD {

// A model that cannot be opened or run; the message is meant for the user.
class RunnerError : public std::runtime_error {
 public:
  explicit RunnerError(const std::string &msg) : std::runtime_error(msg) {}
};

struct ModelInfo {
  std::vector<std::string> elements;    // model element order; species index = position
  double cutoff = 0.0;                  // Å
  int num_layers = 0;                   // message-passing layers
  std::string dtype;                    // "float32" or "float64"
  std::string description;              // one line for the log
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelInfo &info() const = 0;
  // One evaluation (export/README.md's contract): edge_vectors 3*nedges doubles,
  // senders/receivers nedges ints, species nnodes ints, energy_mask nnodes doubles.
  // On return atom_energies has nnodes entries and de_dedge 3*nedges.
  virtual void compute(const double *edge_vectors, const int32_t *senders, const int32_t *receivers,
                       int64_t nedges, const int32_t *species, const double *energy_mask, int64_t nnodes,
                       std::vector<double> &atom_energies, std::vector<double> &de_dedge) = 0;
  // A committee model (facet.committee): its member count (0 for a single model) and, after
  // compute(), each node's energy standard deviation (nnodes) and each member's forces on
  // every node (committee_members() x nnodes x 3, member-major); nullptr for a single model.
  virtual int committee_members() const { return 0; }
  // The model one message-passing layer at a time (facet.stages; several MPI ranks exchange
  // node features between layers): the width of a node's features, 0 when this runtime or
  // model file has no stage programs.
  virtual int feature_size() const { return 0; }
  // Stage program `name` (forward_k, backward_k, last) on one graph whose first nowned nodes
  // are owned (every receiver among them). node_inputs follow the graph in the program's
  // order (features: nnodes x feature_size(); cotangent: nowned x feature_size(); energy_mask:
  // nowned); outputs receive its outputs (features nowned x feature_size(), atom_energies
  // nowned, cotangent nnodes x feature_size(), dE_dedge 3*nedges).
  virtual void run_stage(const std::string &name, const double *edge_vectors, const int32_t *senders,
                         const int32_t *receivers, int64_t nedges, const int32_t *species, int64_t nnodes,
                         int64_t nowned, const std::vector<const double *> &node_inputs,
                         const std::vector<double *> &outputs)
  {
    (void) name, (void) edge_vectors, (void) senders, (void) receivers, (void) nedges, (void) species;
    (void) nnodes, (void) nowned, (void) node_inputs, (void) outputs;
    throw RunnerError("this model cannot run one layer at a time (no stage programs)");
  }
  // Seconds the runtime spent executing its programs since it was opened (PJRT: the execute
  // call and its completion, without copies); negative when the runtime does not measure it.
  virtual double execute_seconds() const { return -1.0; }
  virtual const std::vector<double> *atom_energy_std() const { return nullptr; }
  virtual const std::vector<double> *member_forces() const { return nullptr; }
};

struct RunnerOptions {
  std::string runtime = "pjrt";    // "pjrt" or "python"
  std::string device = "cpu";      // pjrt: "cpu" or "cuda"
  std::string plugin;              // pjrt: plugin library ("" = the installed one)
};

// Opens `spec` (a model file, or a `python:...` factory, which always runs in Python).
std::unique_ptr<ModelRunner> open_model(const std::string &spec, const RunnerOptions &options);

}    // namespace FacetMD

// Exported by facet_python_runner.so: a Python runner for `spec`, or nullptr with *error set.
extern "C" FacetMD::ModelRunner *facet_open_python_runner(const char *spec, std::string *error);

#endif
