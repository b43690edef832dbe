/* Facet-MD: map a LAMMPS full neighbour list onto a Facet graph.
 *
 * Conventions (export/README.md): an edge carries a message from its sender
 * (the neighbour j) to its receiver (the centre i), its vector is
 * r_e = x_j - x_i computed in double precision from LAMMPS coordinates, and
 * both directions of every pair are edges.  Only pairs with |r_e| < cutoff
 * become edges (the neighbour list also holds the skin shell).
 *
 * Two node layouts:
 *
 *  FOLDED (one MPI rank): nodes are the owned atoms 0..nlocal-1.  A ghost
 *    neighbour is a periodic image of an owned atom and is replaced by its
 *    owner (found through its atom ID), so the graph is the periodic graph
 *    itself and message passing over any number of layers is exact with the
 *    ordinary neighbour cutoff.
 *
 *  GHOST (any number of ranks): nodes are owned and ghost atoms
 *    0..nlocal+nghost-1.  Ghost atoms carry energy_mask = 0: their messages
 *    are recomputed redundantly so that the owned atoms' energies are exact,
 *    which needs ghost atoms (with neighbour lists) out to
 *    num_layers x cutoff + skin.  Forces on ghost nodes belong to other
 *    ranks / images and are reverse-communicated by the pair style.
 *
 *  EXCHANGE (any number of ranks; the default on several): the GHOST nodes, but edges
 *    only into owned atoms. The model runs one layer at a time (facet.stages) and the
 *    pair style copies owned atoms' features to their ghost images between layers
 *    (and adds ghost cotangents into their owners on the way back), so ghost atoms
 *    within the ordinary cutoff + skin suffice.
 */
#ifndef FACET_GRAPH_BUILDER_H
#define FACET_GRAPH_BUILDER_H

#include "lmptype.h"

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace FacetMD {

struct Graph {
  int64_t nnodes = 0;
  int64_t nedges = 0;
  std::vector<double> edge_vectors;    // 3 * nedges
  std::vector<int32_t> senders;        // nedges, node index of the neighbour
  std::vector<int32_t> receivers;      // nedges, node index of the centre
  std::vector<int32_t> species;        // nnodes, model element index (0 if unmapped)
  std::vector<double> energy_mask;     // nnodes, 1 for owned mapped atoms, else 0
};

struct NeighborData {
  int inum = 0;                  // centres with neighbour lists (owned atoms)
  int gnum = 0;                  // ghost centres with neighbour lists (GHOST layout)
  const int *ilist = nullptr;
  const int *numneigh = nullptr;
  int *const *firstneigh = nullptr;
};

struct AtomData {
  int nlocal = 0;
  int nghost = 0;
  double *const *x = nullptr;
  const int *type = nullptr;
  const LAMMPS_NS::tagint *tag = nullptr;
};

class GraphBuilder {
 public:
  // type2species[t] for LAMMPS type t (1-based): model element index, or -1
  // for types not handled by this pair style (NULL in pair_coeff).
  // Returns false if a ghost atom has no owned counterpart on this rank
  // (atom IDs missing, or more than one rank): use the GHOST layout then.
  bool build_folded(const AtomData &atoms, const NeighborData &neigh,
                    const std::vector<int> &type2species, double cutoff, Graph &graph);
  void build_ghost(const AtomData &atoms, const NeighborData &neigh,
                   const std::vector<int> &type2species, double cutoff, Graph &graph);
  // EXCHANGE: the GHOST node layout, but only owned atoms are receivers (ghost atoms within
  // one cutoff + skin suffice; their features come from their owners between layers).
  void build_exchange(const AtomData &atoms, const NeighborData &neigh,
                      const std::vector<int> &type2species, double cutoff, Graph &graph);

  // Memory held by the builder, in bytes.
  double memory_usage() const;

 private:
  bool map_owners(const AtomData &atoms);
  void reset_nodes(const AtomData &atoms, const NeighborData &neigh, int nnodes, int ncentres,
                   const std::vector<int> &type2species, Graph &graph);
  template <typename NodeOf>
  bool collect_edges(const AtomData &atoms, const NeighborData &neigh, int ncentres,
                     const std::vector<int> &type2species, double cutoff, NodeOf node_of, Graph &graph);
  std::vector<int> owner_;                       // nlocal+nghost, owned index of each atom
  std::vector<int> tag_to_local_;                // dense tag -> owned index
  std::unordered_map<LAMMPS_NS::tagint, int> sparse_tag_to_local_;
};

}    // namespace FacetMD

#endif
