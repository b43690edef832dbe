/* Facet-MD: LAMMPS pair style `facet`.  See pair_facet.h and cpp/README.md. */

#include "pair_facet.h"

#include "runtime/assemble.h"

#include "model_runner.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

using namespace LAMMPS_NS;

static std::string join(const std::vector<std::string> &words)
{
  std::string out;
  for (const auto &w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

/* ---------------------------------------------------------------------- */

PairFacet::PairFacet(LAMMPS *lmp) :
    Pair(lmp), graph_request(GRAPH_AUTO), ghost_nodes(false), exchange(false), model_cutoff(0.0), model_layers(0),
    reverse_vatom(0), committee_members(0), reverse_members(false), exchange_rows(nullptr), exchange_width(0),
    timing(false), timing_calls(0), timing_graph(0.0), timing_model(0.0), timing_rest(0.0),
    timing_execute_start(0.0), uncertainty_flag(0), uncertainty_nmax(0), uncertainty(nullptr)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the virial is assembled from dE/dr_e directly
  centroidstressflag = CENTROID_SAME;
  unit_convert_flag = 0;
}

PairFacet::~PairFacet()
{
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
  memory->destroy(uncertainty);
  model.reset();
}

/* ---------------------------------------------------------------------- */

void PairFacet::allocate()
{
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      setflag[i][j] = 0;
      cutsq[i][j] = 0.0;
      cutghost[i][j] = 0.0;
    }
  type2species.assign(n, -1);
}

/* ----------------------------------------------------------------------
   make an error raised on any subset of ranks a collective LAMMPS error
   (the message of the lowest failing rank is shown)
------------------------------------------------------------------------- */

void PairFacet::check_collective(const std::string &local_error)
{
  if (comm->nprocs == 1) {
    if (!local_error.empty()) error->all(FLERR, local_error);
    return;
  }
  int mine = local_error.empty() ? comm->nprocs : comm->me;
  int first = comm->nprocs;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
  if (first == comm->nprocs) return;
  int len = (comm->me == first) ? static_cast<int>(local_error.size()) : 0;
  MPI_Bcast(&len, 1, MPI_INT, first, world);
  std::string msg(local_error);
  msg.resize(len);
  MPI_Bcast(&msg[0], len, MPI_CHAR, first, world);
  if (first != 0) msg += fmt::format(" (on MPI rank {})", first);
  error->all(FLERR, msg);
}

/* ----------------------------------------------------------------------
   pair_style facet MODEL [runtime pjrt|python] [device cpu|cuda] [plugin PATH] [graph auto|folded|exchange|ghost]
                          [timing no|yes]
------------------------------------------------------------------------- */

void PairFacet::settings(int narg, char **arg)
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "Pair style facet requires 'units metal' (Facet models use eV and Angstrom); "
               "this input uses 'units {}'",
               update->unit_style);
  if (narg < 1)
    error->all(FLERR, "Illegal pair_style facet command: expected 'pair_style facet MODEL [runtime pjrt|python] "
                      "[device cpu|cuda] [plugin PATH] [graph auto|folded|exchange|ghost] [timing no|yes]'");

  GraphMode request = GRAPH_AUTO;
  bool want_timing = false;
  FacetMD::RunnerOptions options;
  for (int iarg = 1; iarg < narg; iarg += 2) {
    if (strcmp(arg[iarg], "runtime") == 0) {
      if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "pair_style facet runtime", error);
      options.runtime = arg[iarg + 1];
      if (options.runtime != "pjrt" && options.runtime != "python")
        error->all(FLERR, "Illegal pair_style facet runtime '{}': use pjrt (no Python, the default) or python",
                   arg[iarg + 1]);
    } else if (strcmp(arg[iarg], "device") == 0) {
      if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "pair_style facet device", error);
      options.device = arg[iarg + 1];
      if (options.device != "cpu" && options.device != "cuda")
        error->all(FLERR, "Illegal pair_style facet device '{}': use cpu or cuda", arg[iarg + 1]);
    } else if (strcmp(arg[iarg], "plugin") == 0) {
      if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "pair_style facet plugin", error);
      options.plugin = arg[iarg + 1];
    } else if (strcmp(arg[iarg], "graph") == 0) {
      if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "pair_style facet graph", error);
      if (strcmp(arg[iarg + 1], "auto") == 0)
        request = GRAPH_AUTO;
      else if (strcmp(arg[iarg + 1], "folded") == 0)
        request = GRAPH_FOLDED;
      else if (strcmp(arg[iarg + 1], "exchange") == 0)
        request = GRAPH_EXCHANGE;
      else if (strcmp(arg[iarg + 1], "ghost") == 0)
        request = GRAPH_GHOST;
      else
        error->all(FLERR, "Illegal pair_style facet graph value '{}': use auto, folded, exchange or ghost",
                   arg[iarg + 1]);
    } else if (strcmp(arg[iarg], "timing") == 0) {
      if (iarg + 1 >= narg) utils::missing_cmd_args(FLERR, "pair_style facet timing", error);
      want_timing = utils::logical(FLERR, arg[iarg + 1], false, lmp) != 0;
    } else {
      error->all(FLERR, "Unknown pair_style facet keyword '{}'", arg[iarg]);
    }
  }
  graph_request = request;
  timing = want_timing;
  if (options.runtime == "python" && (options.device != "cpu" || !options.plugin.empty()))
    error->all(FLERR, "Pair style facet: 'device' and 'plugin' apply to the PJRT runtime, not to 'runtime python'");

  const std::string spec = arg[0];
  const std::string key = spec + "\n" + options.runtime + "\n" + options.device + "\n" + options.plugin;
  if (model && key == model_spec) return;    // same model and runtime: keep it

  model.reset();
  model_spec.clear();
  std::string failure;
  try {
    model = FacetMD::open_model(spec, options);
  } catch (std::exception &e) {
    failure = e.what();
    model.reset();
  }
  if (failure.empty()) {
    const auto &info = model->info();
    if (info.elements.empty())
      failure = "model '" + spec + "' lists no elements";
    else if (!(info.cutoff > 0.0) || !std::isfinite(info.cutoff))
      failure = "model '" + spec + "' has an invalid cutoff";
    else if (info.num_layers < 1)
      failure = "model '" + spec + "' has an invalid number of layers";
  }
  if (!failure.empty()) {
    model.reset();
    failure = "Pair style facet cannot load model '" + spec + "': " + failure;
  }
  check_collective(failure);

  model_spec = key;
  model_cutoff = model->info().cutoff;
  model_layers = model->info().num_layers;
  if (comm->me == 0)
    utils::logmesg(lmp, "Facet model {}: {}\n  elements: {}; cutoff {} A; {} message-passing "
                        "layers; {}\n",
                   spec, model->info().description, join(model->info().elements),
                   model_cutoff, model_layers, model->info().dtype);

  // a new model invalidates the element mapping
  if (allocated) {
    for (int i = 0; i <= atom->ntypes; i++) {
      type2species[i] = -1;
      for (int j = 0; j <= atom->ntypes; j++) setflag[i][j] = 0;
    }
  }
}

/* ----------------------------------------------------------------------
   pair_coeff * * El1 El2 ... (NULL = type not handled by this style)
------------------------------------------------------------------------- */

void PairFacet::coeff(int narg, char **arg)
{
  if (!model) error->all(FLERR, "pair_coeff for pair style facet before a model is loaded");
  if (!allocated) allocate();

  const int ntypes = atom->ntypes;
  if (narg < 2 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Pair style facet expects 'pair_coeff * * El1 El2 ...' with one element "
                      "symbol (or NULL) per atom type");
  if (narg - 2 != ntypes)
    error->all(FLERR,
               "Pair style facet: pair_coeff * * needs one element symbol per atom type; "
               "the box has {} atom type(s) but {} symbol(s) were given",
               ntypes, narg - 2);

  const auto &elements = model->info().elements;
  for (int t = 1; t <= ntypes; t++) {
    const std::string sym = arg[t + 1];
    if (sym == "NULL") {
      type2species[t] = -1;
      continue;
    }
    auto it = std::find(elements.begin(), elements.end(), sym);
    if (it == elements.end())
      error->all(FLERR,
                 "Pair style facet: element '{}' (atom type {}) is not in the model; the model "
                 "knows: {}",
                 sym, t, join(elements));
    type2species[t] = static_cast<int>(it - elements.begin());
  }

  int count = 0;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++)
      if (type2species[i] >= 0 && type2species[j] >= 0) {
        setflag[i][j] = 1;
        count++;
      } else {
        setflag[i][j] = 0;
      }
  if (count == 0) error->all(FLERR, "Pair style facet: pair_coeff maps no atom type to an element");
}

/* ---------------------------------------------------------------------- */

void PairFacet::init_style()
{
  if (!model) error->all(FLERR, "Pair style facet has no model loaded");
  if (atom->tag_enable == 0) error->all(FLERR, "Pair style facet requires atom IDs");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "Pair style facet requires 'units metal'; this input uses 'units {}'",
               update->unit_style);

  if (graph_request == GRAPH_FOLDED && comm->nprocs > 1)
    error->all(FLERR,
               "Pair style facet 'graph folded' works on one MPI rank only ({} ranks in use); "
               "use 'graph ghost' or 'graph auto'",
               comm->nprocs);
  // several ranks: exchange features between layers when the model can run layer by layer
  const bool layered = model->feature_size() > 0 && model_layers > 1;
  if (graph_request == GRAPH_EXCHANGE && !layered)
    error->all(FLERR,
               "Pair style facet 'graph exchange' needs a model file with per-layer (stage) programs, and "
               "model '{}' has none{}. Re-export it with `python -m facet.export CHECKPOINT -o model.hlo` "
               "(stage programs are written by default), or use 'graph ghost'",
               model_spec.substr(0, model_spec.find('\n')),
               model_layers > 1 ? "" : " (it has one message-passing layer: 'graph ghost' costs nothing extra)");
  exchange = graph_request == GRAPH_EXCHANGE || (graph_request == GRAPH_AUTO && comm->nprocs > 1 && layered);
  ghost_nodes = graph_request == GRAPH_GHOST || (graph_request == GRAPH_AUTO && comm->nprocs > 1 && !layered);
  if (ghost_nodes) {
    // message passing over L layers reaches L x cutoff: every atom within
    // that distance of an owned atom (plus the skin, since ghost atoms are
    // only refreshed on reneighboring) must be present, with neighbours
    if (comm->mode != Comm::SINGLE)
      error->all(FLERR, "Pair style facet with ghost-atom graphs requires 'comm_modify mode single'");
    const double skin = neighbor->skin;
    const double needed = model_layers * model_cutoff + skin;
    const double have = std::max(comm->cutghostuser, model_cutoff + skin);
    if (have < needed * (1.0 - 1e-12))
      error->all(FLERR,
                 "Pair style facet on {} MPI rank(s) builds its graph from ghost atoms and needs "
                 "them out to num_layers x cutoff + skin = {} x {} + {} = {} A, but the "
                 "communication cutoff is {} A. Add 'comm_modify cutoff {}' (or larger) before "
                 "the run{}",
                 comm->nprocs, model_layers, model_cutoff, skin, needed, have,
                 std::ceil(needed * 1000.0) / 1000.0,
                 graph_request == GRAPH_GHOST ? ", or use 'graph exchange', which needs no more than the "
                                                "ordinary cutoff + skin"
                                              : ". Or re-export the model with `python -m facet.export "
                                                "CHECKPOINT -o model.hlo`: its per-layer programs let ranks "
                                                "exchange features instead, with the ordinary cutoff + skin");
    ghostneigh = 1;
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  } else {
    ghostneigh = 0;
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }

  // newton_pair off with ghost nodes: LAMMPS does not reverse-communicate
  // ghost forces, so this style does (forces + per-atom virial)
  // and a committee's member forces (3 per member) with ghost nodes, either newton setting
  committee_members = model->committee_members();
  comm_reverse = ghost_nodes ? 3 * committee_members : 0;
  comm_reverse_off = ((ghost_nodes || exchange) && !force->newton_pair) ? std::max(9, comm_reverse) : comm_reverse;
  // exchange: one row of node features forward, one row of their cotangents back, per ghost
  comm_forward = exchange ? model->feature_size() : 0;
  if (exchange) {
    comm_reverse = std::max(comm_reverse, model->feature_size());
    comm_reverse_off = std::max(comm_reverse_off, model->feature_size());
  }
}

/* ---------------------------------------------------------------------- */

double PairFacet::init_one(int i, int j)
{
  if (setflag[i][j] == 0 && !(type2species[i] >= 0 && type2species[j] >= 0))
    error->all(FLERR, "All pair coeffs are not set");
  cutghost[i][j] = cutghost[j][i] = model_cutoff;
  return model_cutoff;
}

/* ---------------------------------------------------------------------- */

using Clock = std::chrono::steady_clock;

void PairFacet::compute(int eflag, int vflag)
{
  const Clock::time_point started = Clock::now();
  if (timing && timing_calls == 0) timing_execute_start = model->execute_seconds();
  ev_init(eflag, vflag);

  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;

  FacetMD::AtomData atoms;
  atoms.nlocal = nlocal;
  atoms.nghost = atom->nghost;
  atoms.x = atom->x;
  atoms.type = atom->type;
  atoms.tag = atom->tag;
  FacetMD::NeighborData neigh;
  neigh.inum = list->inum;
  neigh.gnum = ghost_nodes ? list->gnum : 0;
  neigh.ilist = list->ilist;
  neigh.numneigh = list->numneigh;
  neigh.firstneigh = list->firstneigh;

  std::string failure;
  if (exchange) {
    builder.build_exchange(atoms, neigh, type2species, model_cutoff, graph);
  } else if (ghost_nodes) {
    builder.build_ghost(atoms, neigh, type2species, model_cutoff, graph);
  } else if (!builder.build_folded(atoms, neigh, type2species, model_cutoff, graph)) {
    failure = "Pair style facet: a ghost atom has no owned counterpart on this rank "
              "(folded graphs need one MPI rank and atom IDs); use 'graph ghost'";
  }

  const Clock::time_point built = Clock::now();
  // ranks owning no mapped atom contribute nothing: skip the model call
  bool any_owned = false;
  for (int i = 0; i < nlocal && !any_owned; i++) any_owned = graph.energy_mask[i] != 0.0;

  if (exchange) {
    compute_by_layers(any_owned, failure);    // every rank takes part in each exchange
  } else if (failure.empty() && any_owned) {
    try {
      model->compute(graph.edge_vectors.data(), graph.senders.data(), graph.receivers.data(),
                     graph.nedges, graph.species.data(), graph.energy_mask.data(), graph.nnodes,
                     atom_energies, de_dedge);
    } catch (std::exception &e) {
      failure = std::string("Pair style facet: model evaluation failed: ") + e.what();
    }
  }
  check_collective(failure);
  const Clock::time_point modelled = Clock::now();
  if (!any_owned && !exchange) {    // nothing to add here, but take part in any reverse communication
    atom_energies.assign(graph.nnodes, 0.0);
    de_dedge.assign(3 * graph.nedges, 0.0);
  }

  // a committee's spread, per owned atom (fix pair ... uncertainty): member forces of
  // ghost nodes are added to their owners first, so the deviation is exact on any ranks
  if (committee_members) {
    const int nm3 = 3 * committee_members;
    const int64_t nnodes = graph.nnodes;
    member_forces.assign(static_cast<size_t>(nall) * nm3, 0.0);
    if (any_owned) {
      const std::vector<double> &mf = *model->member_forces();    // (members, nnodes, 3)
      for (int m = 0; m < committee_members; m++)
        for (int64_t i = 0; i < nnodes; i++)
          for (int k = 0; k < 3; k++) member_forces[i * nm3 + 3 * m + k] = mf[(m * nnodes + i) * 3 + k];
    }
    if (ghost_nodes) {
      reverse_members = true;
      comm->reverse_comm(this);
      reverse_members = false;
    }
    grow_uncertainty();
    const std::vector<double> *estd = any_owned ? model->atom_energy_std() : nullptr;
    for (int i = 0; i < nlocal; i++) {
      const bool mine = graph.energy_mask[i] != 0.0;
      uncertainty[i][0] = mine && estd ? (*estd)[i] : 0.0;
      uncertainty[i][1] = mine ? facet::member_force_deviation(&member_forces[static_cast<size_t>(i) * nm3],
                                                               committee_members) : 0.0;
    }
  }

  // energies of owned atoms

  if (eflag_either) {
    for (int i = 0; i < nlocal; i++) {
      if (graph.energy_mask[i] == 0.0) continue;
      if (eflag_global) eng_vdwl += atom_energies[i];
      if (eflag_atom) eatom[i] += atom_energies[i];
    }
  }

  // forces and virials from dE/dr_e (export/README.md):
  //   F_sender -= g_e, F_receiver += g_e, W = -sum_e r_e (x) g_e,
  //   per-atom virial: half of edge e's term to each of its two atoms

  const bool own_reverse = (ghost_nodes || exchange) && !force->newton_pair;
  double **f = atom->f;
  double *const *force_rows = f;
  double *const *vatom_rows = vflag_atom ? vatom : nullptr;
  double *fb = nullptr, *vb = nullptr;
  if (own_reverse) {    // ghost rows are summed into owned atoms by reverse_comm below
    fbuf.assign(3 * static_cast<size_t>(nall), 0.0);
    fb = fbuf.data();
    fbuf_rows.resize(nall);
    for (int i = 0; i < nall; i++) fbuf_rows[i] = fb + 3 * static_cast<size_t>(i);
    force_rows = fbuf_rows.data();
    if (vflag_atom) {
      vbuf.assign(6 * static_cast<size_t>(nall), 0.0);
      vb = vbuf.data();
      vbuf_rows.resize(nall);
      for (int i = 0; i < nall; i++) vbuf_rows[i] = vb + 6 * static_cast<size_t>(i);
      vatom_rows = vbuf_rows.data();
    }
  }
  double vsum[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  facet::add_forces_and_virial(graph.edge_vectors.data(), de_dedge.data(), graph.senders.data(),
                               graph.receivers.data(), graph.nedges, force_rows,
                               vflag_global ? vsum : nullptr, vatom_rows);
  if (vflag_global)
    for (int k = 0; k < 6; k++) virial[k] += vsum[k];

  if (own_reverse) {
    reverse_vatom = vb ? 1 : 0;
    comm->reverse_comm(this);
    for (int i = 0; i < nlocal; i++) {
      f[i][0] += fb[3 * i];
      f[i][1] += fb[3 * i + 1];
      f[i][2] += fb[3 * i + 2];
    }
    if (vb)
      for (int i = 0; i < nlocal; i++)
        for (int k = 0; k < 6; k++) vatom[i][k] += vb[6 * i + k];
  }
  if (timing) {
    timing_calls++;
    timing_graph += std::chrono::duration<double>(built - started).count();
    timing_model += std::chrono::duration<double>(modelled - built).count();
    timing_rest += std::chrono::duration<double>(Clock::now() - modelled).count();
  }
}

/* ----------------------------------------------------------------------
   `timing yes`: where compute() spent its time since the last run ended, per call,
   averaged over ranks (the model phase includes the exchange's communication)
------------------------------------------------------------------------- */

void PairFacet::finish()
{
  if (!timing) return;
  const double executed = timing_calls ? model->execute_seconds() - timing_execute_start : 0.0;
  double mine[5] = {timing_graph, timing_model, timing_rest, executed, static_cast<double>(timing_calls)};
  double sum[5];
  MPI_Allreduce(mine, sum, 5, MPI_DOUBLE, MPI_SUM, world);
  const double calls = sum[4] / comm->nprocs;
  if (comm->me == 0 && calls > 0) {
    const double ms = 1e3 / (calls * comm->nprocs);
    const std::string execute = model->execute_seconds() < 0.0
        ? "not measured by this runtime"
        : fmt::format("{:.4f} ms", sum[3] * ms);
    utils::logmesg(lmp,
                   "Pair facet timing: {} calls; per call (average over {} ranks): graph {:.4f} ms, "
                   "model {:.4f} ms (bare execute {}), forces and virial {:.4f} ms, compute {:.4f} ms\n",
                   static_cast<long>(calls), comm->nprocs, sum[0] * ms, sum[1] * ms, execute, sum[2] * ms,
                   (sum[0] + sum[1] + sum[2]) * ms);
    if (logfile) fflush(logfile);    // readable while LAMMPS runs on (benchmarks/lammps_step.py)
  }
  timing_calls = 0;
  timing_graph = timing_model = timing_rest = 0.0;
}

/* ----------------------------------------------------------------------
   EXCHANGE: the model one layer at a time. Forward: layer k's node features, then their
   ghost rows from their owners (forward_comm). Back: the last layer's cotangents, ghost rows
   added into their owners (reverse_comm) and cleared, then each layer's VJP. dE/d(edge)
   sums over the layers. A rank that owns nothing, or whose model call failed, still takes
   part in every exchange (with zeros); the failure is raised collectively afterwards.
------------------------------------------------------------------------- */

void PairFacet::compute_by_layers(bool any_owned, std::string &failure)
{
  const int width = model->feature_size();
  const size_t nnodes = static_cast<size_t>(graph.nnodes);
  const size_t nlocal = static_cast<size_t>(atom->nlocal);
  const size_t rows = nnodes * width;
  const int64_t nedges = graph.nedges;
  bool run_model = failure.empty() && any_owned;
  auto run = [&](const std::string &name, const std::vector<const double *> &in, const std::vector<double *> &out) {
    if (!run_model) return;
    try {
      model->run_stage(name, graph.edge_vectors.data(), graph.senders.data(), graph.receivers.data(), nedges,
                       graph.species.data(), graph.nnodes, atom->nlocal, in, out);
    } catch (std::exception &e) {
      failure = std::string("Pair style facet: model evaluation failed (stage ") + name + "): " + e.what();
      run_model = false;
    }
  };
  layer_features.resize(model_layers - 1);
  exchange_width = width;
  for (int k = 0; k + 1 < model_layers; k++) {
    layer_features[k].assign(rows, 0.0);
    std::vector<const double *> in;
    if (k > 0) in.push_back(layer_features[k - 1].data());
    run("forward_" + std::to_string(k), in, {layer_features[k].data()});
    exchange_rows = layer_features[k].data();
    comm->forward_comm(this);
  }
  atom_energies.assign(nnodes, 0.0);
  de_dedge.assign(3 * static_cast<size_t>(nedges), 0.0);
  cotangent.assign(rows, 0.0);
  run("last", {layer_features[model_layers - 2].data(), graph.energy_mask.data()},
      {atom_energies.data(), de_dedge.data(), cotangent.data()});
  stage_grad.assign(3 * static_cast<size_t>(nedges), 0.0);
  for (int k = model_layers - 2; k >= 0; k--) {
    exchange_rows = cotangent.data();
    comm->reverse_comm(this);    // the backward programs read the owned rows only
    if (k == 0) {
      run("backward_0", {cotangent.data()}, {stage_grad.data()});
    } else {
      cotangent_next.assign(rows, 0.0);
      run("backward_" + std::to_string(k), {layer_features[k - 1].data(), cotangent.data()},
          {cotangent_next.data(), stage_grad.data()});
      cotangent.swap(cotangent_next);
    }
    if (run_model)
      for (size_t e = 0; e < de_dedge.size(); e++) de_dedge[e] += stage_grad[e];
  }
  exchange_rows = nullptr;
  if (!run_model) {    // nothing (or nothing valid) to add from this rank
    atom_energies.assign(nnodes, 0.0);
    de_dedge.assign(3 * static_cast<size_t>(nedges), 0.0);
  }
}

/* ----------------------------------------------------------------------
   forward communication of node features (EXCHANGE): owned rows to their ghost images
------------------------------------------------------------------------- */

int PairFacet::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/, int * /*pbc*/)
{
  int m = 0;
  const size_t w = exchange_width;
  for (int i = 0; i < n; i++) {
    const double *row = exchange_rows + static_cast<size_t>(list[i]) * w;
    for (size_t k = 0; k < w; k++) buf[m++] = row[k];
  }
  return m;
}

void PairFacet::unpack_forward_comm(int n, int first, double *buf)
{
  int m = 0;
  const size_t w = exchange_width;
  for (int i = first; i < first + n; i++) {
    double *row = exchange_rows + static_cast<size_t>(i) * w;
    for (size_t k = 0; k < w; k++) row[k] = buf[m++];
  }
}

/* ----------------------------------------------------------------------
   reverse communication of ghost forces (+ per-atom virials), newton off;
   of committee member forces; and (EXCHANGE) of feature cotangents
------------------------------------------------------------------------- */

int PairFacet::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  const int last = first + n;
  if (exchange_rows) {
    const size_t w = exchange_width;
    for (int i = first; i < last; i++) {
      const double *row = exchange_rows + static_cast<size_t>(i) * w;
      for (size_t k = 0; k < w; k++) buf[m++] = row[k];
    }
    return m;
  }
  if (reverse_members) {
    const int nm3 = 3 * committee_members;
    for (int i = first; i < last; i++)
      for (int k = 0; k < nm3; k++) buf[m++] = member_forces[static_cast<size_t>(i) * nm3 + k];
    return m;
  }
  for (int i = first; i < last; i++) {
    for (int k = 0; k < 3; k++) buf[m++] = fbuf[3 * static_cast<size_t>(i) + k];
    if (reverse_vatom)
      for (int k = 0; k < 6; k++) buf[m++] = vbuf[6 * static_cast<size_t>(i) + k];
  }
  return m;
}

void PairFacet::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  if (exchange_rows) {
    const size_t w = exchange_width;
    for (int i = 0; i < n; i++) {
      double *row = exchange_rows + static_cast<size_t>(list[i]) * w;
      for (size_t k = 0; k < w; k++) row[k] += buf[m++];
    }
    return;
  }
  if (reverse_members) {
    const int nm3 = 3 * committee_members;
    for (int i = 0; i < n; i++)
      for (int k = 0; k < nm3; k++) member_forces[static_cast<size_t>(list[i]) * nm3 + k] += buf[m++];
    return;
  }
  for (int i = 0; i < n; i++) {
    const size_t j = list[i];
    for (int k = 0; k < 3; k++) fbuf[3 * j + k] += buf[m++];
    if (reverse_vatom)
      for (int k = 0; k < 6; k++) vbuf[6 * j + k] += buf[m++];
  }
}

/* ---------------------------------------------------------------------- */

void PairFacet::grow_uncertainty()
{
  if (atom->nmax <= uncertainty_nmax && uncertainty) return;
  memory->destroy(uncertainty);
  uncertainty_nmax = std::max(atom->nmax, 1);
  memory->create(uncertainty, uncertainty_nmax, 2, "pair:uncertainty");
  for (int i = 0; i < uncertainty_nmax; i++) uncertainty[i][0] = uncertainty[i][1] = 0.0;
}

void *PairFacet::extract(const char *name, int &dim)
{
  dim = 0;
  if (strcmp(name, "uncertainty_flag") == 0) return &uncertainty_flag;
  return nullptr;
}

void *PairFacet::extract_peratom(const char *name, int &ncol)
{
  if (strcmp(name, "uncertainty") != 0) return nullptr;
  if (!model || !model->committee_members())
    error->all(FLERR, "Pair style facet: 'uncertainty' needs a committee model file (python -m facet.export "
                      "committee, or python -m facet.train --ensemble N) run by the default runtime (pjrt)");
  grow_uncertainty();
  ncol = 2;
  return uncertainty;
}

double PairFacet::memory_usage()
{
  double bytes = Pair::memory_usage();
  bytes += graph.edge_vectors.capacity() * sizeof(double);
  bytes += (graph.senders.capacity() + graph.receivers.capacity() + graph.species.capacity()) *
      sizeof(int32_t);
  bytes += graph.energy_mask.capacity() * sizeof(double);
  bytes += (atom_energies.capacity() + de_dedge.capacity() + fbuf.capacity() + vbuf.capacity()) *
      sizeof(double);
  bytes += builder.memory_usage();
  for (const auto &features : layer_features) bytes += features.capacity() * sizeof(double);
  bytes += (cotangent.capacity() + cotangent_next.capacity() + stage_grad.capacity()) * sizeof(double);
  return bytes;
}
