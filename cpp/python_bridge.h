/* Facet-MD: runtime bridge between the LAMMPS pair style and the Python model.
 *
 * This is the only translation unit that includes Python.h / pybind11.  It
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

namespace FacetMD {

class BridgeError : public std::runtime_error {
 public:
  explicit BridgeError(const std::string &msg) : std::runtime_error(msg) {}
};

// Start the embedded interpreter if this process has none yet.  Returns a
// one-line description of the interpreter in use (for the LAMMPS log).
std::string ensure_python();

struct ModelInfo {
  std::vector<std::string> elements;    // model element order; species index = position
  double cutoff = 0.0;                  // Å
  int num_layers = 0;                   // message-passing layers
  std::string dtype;                    // "float32" or "float64"
  std::string description;              // one line for the log
};

class PythonModel {
 public:
  // Loads the model named by `spec` (a model file path, or a
  // `python:MODULE:CALLABLE[:ARG]` factory; see facet/lammps_bridge.py).
  explicit PythonModel(const std::string &spec);
  ~PythonModel();
  PythonModel(const PythonModel &) = delete;
  PythonModel &operator=(const PythonModel &) = delete;

  const ModelInfo &info() const { return info_; }

  // Evaluate the model on one graph (see export/README.md for the contract).
  //   edge_vectors: 3*nedges doubles, senders/receivers: nedges ints,
  //   species: nnodes ints, energy_mask: nnodes doubles.
  // On return atom_energies has nnodes entries and de_dedge 3*nedges.
  void compute(const double *edge_vectors, const int32_t *senders, const int32_t *receivers,
               int64_t nedges, const int32_t *species, const double *energy_mask,
               int64_t nnodes, std::vector<double> &atom_energies,
               std::vector<double> &de_dedge);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ModelInfo info_;
};

}    // namespace FacetMD

#endif
