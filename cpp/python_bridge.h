/* Facet-MD: the Python runtime of the pair style (`runtime python`, and every
 * `python:MODULE:CALLABLE[:ARG]` runner factory).
 *
 * Built into its own library, facet_python_runner.so, which the plugin loads only when
 * this runtime is asked for, so that the default runtime maps no libpython.  It is the
 * only translation unit that includes Python.h / pybind11.  It
 *  - starts the embedded interpreter once per process (or attaches to the
 *    running one when LAMMPS is driven from Python), and never finalises it;
 *  - loads a model through `facet.lammps_bridge.load(spec)`;
 *  - calls the model with flat C++ buffers and copies the float64 results back.
 *
 * Every failure is reported as a `FacetMD::BridgeError` carrying a message that
 * is meant for the user (the pair style turns it into a LAMMPS error).
 */
#ifndef FACET_PYTHON_BRIDGE_H
#define FACET_PYTHON_BRIDGE_H

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "model_runner.h"

namespace FacetMD {

class BridgeError : public RunnerError {
 public:
  explicit BridgeError(const std::string &msg) : RunnerError(msg) {}
};

// Start the embedded interpreter if this process has none yet.  Returns a
// one-line description of the interpreter in use (for the LAMMPS log).
std::string ensure_python();

class PythonModel : public ModelRunner {
 public:
  // Loads the model named by `spec` (a model file path, or a
  // `python:MODULE:CALLABLE[:ARG]` factory; see facet/lammps_bridge.py).
  explicit PythonModel(const std::string &spec);
  ~PythonModel();
  PythonModel(const PythonModel &) = delete;
  PythonModel &operator=(const PythonModel &) = delete;

  const ModelInfo &info() const override { return info_; }

  // Evaluate the model on one graph (see export/README.md for the contract).
  //   edge_vectors: 3*nedges doubles, senders/receivers: nedges ints,
  //   species: nnodes ints, energy_mask: nnodes doubles.
  // On return atom_energies has nnodes entries and de_dedge 3*nedges.
  void compute(const double *edge_vectors, const int32_t *senders, const int32_t *receivers,
               int64_t nedges, const int32_t *species, const double *energy_mask,
               int64_t nnodes, std::vector<double> &atom_energies,
               std::vector<double> &de_dedge) override;

  int feature_size() const override { return feature_size_; }
  void run_stage(const std::string &name, const double *edge_vectors, const int32_t *senders,
                 const int32_t *receivers, int64_t nedges, const int32_t *species, int64_t nnodes, int64_t nowned,
                 const std::vector<const double *> &node_inputs, const std::vector<double *> &outputs) override;

 private:
  int feature_size_ = 0;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
};

}    // namespace FacetMD

#endif
