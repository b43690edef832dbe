/* Facet-MD: LAMMPS pair style `facet` (a JAX-exported Facet model).
 *
 *   pair_style facet MODEL [runtime pjrt|python] [device cpu|cuda] [plugin PATH] [graph auto|folded|exchange|ghost]
 *                          [timing no|yes]
 *   pair_coeff * * El1 El2 ...        (one element symbol or NULL per atom type)
 *
 * MODEL is a Facet model file (or a `python:MODULE:CALLABLE[:ARG]` runner
 * factory, see facet/lammps_bridge.py).  `runtime` (model_runner.h): pjrt
 * (default; no Python) or python (embedded interpreter).  `device` and `plugin`
 * choose the PJRT device kind and plugin library.  `graph` selects how the neighbour
 * list becomes the model's graph (see graph_builder.h): `folded` (one MPI
 * rank; ghost neighbours folded onto their owned atoms), `exchange` (ghost atoms
 * within cutoff + skin; the model runs layer by layer and ranks exchange the ghost
 * atoms' features between layers; needs a model file with stage programs),
 * `ghost` (ghost atoms are graph nodes with zero energy mask whose messages are
 * recomputed; needs `comm_modify cutoff` >= num_layers x cutoff + skin), or `auto`
 * (default: folded on one rank; exchange on several, ghost for a model without
 * stage programs).  `timing yes` prints, at the end of each run, where compute()'s time
 * went: graph building, the model (and within it the runtime's bare execute), forces.
 */
#ifndef LMP_PAIR_FACET_H
#define LMP_PAIR_FACET_H

#include "pair.h"

#include "graph_builder.h"

#include <memory>
#include <string>
#include <vector>

namespace FacetMD {
class ModelRunner;
}

namespace LAMMPS_NS {

class PairFacet : public Pair {
 public:
  PairFacet(class LAMMPS *);
  ~PairFacet() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  double memory_usage() override;
  void finish() override;    // `timing yes`: the per-call time breakdown of the run
  // `fix ID all pair N facet uncertainty 1`: per-atom committee spread, columns energy
  // std (eV) and force std (eV/Å); needs a committee model file (facet.committee).
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;

 protected:
  enum GraphMode { GRAPH_AUTO, GRAPH_FOLDED, GRAPH_EXCHANGE, GRAPH_GHOST };

  std::unique_ptr<FacetMD::ModelRunner> model;
  std::string model_spec;    // the model and its runtime options: a repeated pair_style keeps the model
  GraphMode graph_request;
  bool ghost_nodes;       // current run uses the GHOST node layout
  bool exchange;          // current run uses the EXCHANGE layout (layer by layer)
  double model_cutoff;    // Å
  int model_layers;

  std::vector<int> type2species;    // per LAMMPS type (1-based), -1 = NULL
  FacetMD::GraphBuilder builder;
  FacetMD::Graph graph;
  std::vector<double> atom_energies, de_dedge;

  // own reverse communication of ghost forces / per-atom virials (ghost
  // layout with newton_pair off, where LAMMPS does not reverse-communicate)
  std::vector<double> fbuf, vbuf;
  std::vector<double *> fbuf_rows, vbuf_rows;    // row views of fbuf and vbuf
  int reverse_vatom;

  // a committee: each member's forces on each atom (3 x members per atom, atom-major);
  // with ghost nodes their ghost rows are reverse-communicated like the forces, so that
  // the force deviation of every owned atom is exact
  std::vector<double> member_forces;
  int committee_members;
  bool reverse_members;    // what pack/unpack_reverse_comm move: member forces, else fbuf/vbuf

  // EXCHANGE: node features after each layer but the last (layer_features[k] = input of
  // layer k + 1, nall x feature_size), the cotangents flowing back, and the rows that
  // pack/unpack_forward_comm and (when exchange_rows is set) the reverse ones move
  std::vector<std::vector<double>> layer_features;
  std::vector<double> cotangent, cotangent_next, stage_grad;
  double *exchange_rows;
  int exchange_width;
  void compute_by_layers(bool any_owned, std::string &failure);

  // `timing yes`: seconds per phase of compute() since the last finish(), summed over calls,
  // and the runtime's execute_seconds() then
  bool timing;
  long timing_calls;
  double timing_graph, timing_model, timing_rest, timing_execute_start;

  int uncertainty_flag;      // set by fix pair on the steps it wants the uncertainty
  int uncertainty_nmax;      // rows allocated in uncertainty
  double **uncertainty;      // per owned atom: energy std, force std over the committee
  void grow_uncertainty();

  void allocate();
  void check_collective(const std::string &local_error);
};

}    // namespace LAMMPS_NS

#endif
