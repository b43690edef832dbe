// Experiment: compile a Facet StableHLO template for one bucket through a PJRT plugin and run it.
#include <dlfcn.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include "pjrt_c_api.h"

static const PJRT_Api *api;
static void check(PJRT_Error *err, const char *what) {
  if (!err) return;
  PJRT_Error_Message_Args m{PJRT_Error_Message_Args_STRUCT_SIZE, nullptr, err, nullptr, 0};
  api->PJRT_Error_Message(&m);
  std::string msg(m.message, m.message_size);
  PJRT_Error_Destroy_Args d{PJRT_Error_Destroy_Args_STRUCT_SIZE, nullptr, err};
  api->PJRT_Error_Destroy(&d);
  throw std::runtime_error(std::string(what) + ": " + msg);
}
static std::string slurp(const std::string &p) { std::ifstream f(p, std::ios::binary); std::stringstream s; s << f.rdbuf(); return s.str(); }
static void await(PJRT_Event *ev) {
  if (!ev) return;
  PJRT_Event_Await_Args a{PJRT_Event_Await_Args_STRUCT_SIZE, nullptr, ev}; check(api->PJRT_Event_Await(&a), "await");
  PJRT_Event_Destroy_Args d{PJRT_Event_Destroy_Args_STRUCT_SIZE, nullptr, ev}; api->PJRT_Event_Destroy(&d);
}
int main(int argc, char **argv) {
  std::string plugin = argv[1], dir = argv[2]; long N = atol(argv[3]), E = atol(argv[4]);
  void *h = dlopen(plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
  auto get = (const PJRT_Api *(*)())dlsym(h, "GetPjrtApi");
  api = get();
  printf("plugin PJRT API %d.%d (header %d.%d)\n", api->pjrt_api_version.major_version, api->pjrt_api_version.minor_version, PJRT_API_MAJOR, PJRT_API_MINOR);
  PJRT_Plugin_Initialize_Args ia{PJRT_Plugin_Initialize_Args_STRUCT_SIZE, nullptr}; check(api->PJRT_Plugin_Initialize(&ia), "init");
  PJRT_Client_Create_Args ca{}; ca.struct_size = PJRT_Client_Create_Args_STRUCT_SIZE; check(api->PJRT_Client_Create(&ca), "client");
  std::string text = slurp(dir + "/template.mlir");
  for (auto [tok, val] : {std::pair<std::string, long>{"@@N@@", N}, {"@@E@@", E}}) {
    std::string v = std::to_string(val); size_t pos = 0;
    while ((pos = text.find(tok, pos)) != std::string::npos) { text.replace(pos, tok.size(), v); pos += v.size(); }
  }
  std::string opts = slurp(dir + "/options.pb");
  PJRT_Program prog{PJRT_Program_STRUCT_SIZE, nullptr, text.data(), text.size(), "mlir", 4};
  PJRT_Client_Compile_Args cc{}; cc.struct_size = PJRT_Client_Compile_Args_STRUCT_SIZE; cc.client = ca.client; cc.program = &prog;
  cc.compile_options = opts.data(); cc.compile_options_size = opts.size();
  auto t0 = std::chrono::steady_clock::now();
  check(api->PJRT_Client_Compile(&cc), "compile");
  printf("compiled in %.2f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  PJRT_Client_AddressableDevices_Args da{}; da.struct_size = PJRT_Client_AddressableDevices_Args_STRUCT_SIZE; da.client = ca.client;
  check(api->PJRT_Client_AddressableDevices(&da), "devices");
  struct In { const char *name; PJRT_Buffer_Type type; std::vector<int64_t> dims; };
  std::vector<In> ins = {{"v", PJRT_Buffer_Type_F32, {E, 3}}, {"s", PJRT_Buffer_Type_S32, {E}}, {"r", PJRT_Buffer_Type_S32, {E}},
                         {"sp", PJRT_Buffer_Type_S32, {N}}, {"m", PJRT_Buffer_Type_F32, {N}}};
  std::vector<std::string> data; std::vector<PJRT_Buffer *> bufs;
  for (auto &in : ins) {
    data.push_back(slurp(dir + "/" + in.name + ".bin"));
    PJRT_Client_BufferFromHostBuffer_Args b{}; b.struct_size = PJRT_Client_BufferFromHostBuffer_Args_STRUCT_SIZE; b.client = ca.client;
    b.data = data.back().data(); b.type = in.type; b.dims = in.dims.data(); b.num_dims = in.dims.size();
    b.host_buffer_semantics = PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes; b.device = da.addressable_devices[0];
    check(api->PJRT_Client_BufferFromHostBuffer(&b), "buffer"); await(b.done_with_host_buffer); bufs.push_back(b.buffer);
  }
  PJRT_Buffer *outs[2] = {nullptr, nullptr}; PJRT_Buffer **out_list = outs; PJRT_Buffer *const *arg_list = bufs.data();
  PJRT_ExecuteOptions eo{}; eo.struct_size = PJRT_ExecuteOptions_STRUCT_SIZE;
  PJRT_Event *done = nullptr;
  for (int rep = 0; rep < 4; ++rep) {
    PJRT_LoadedExecutable_Execute_Args ex{}; ex.struct_size = PJRT_LoadedExecutable_Execute_Args_STRUCT_SIZE; ex.executable = cc.executable;
    ex.options = &eo; ex.argument_lists = &arg_list; ex.num_devices = 1; ex.num_args = bufs.size(); ex.output_lists = &out_list;
    ex.device_complete_events = &done;
    auto t1 = std::chrono::steady_clock::now();
    check(api->PJRT_LoadedExecutable_Execute(&ex), "execute"); await(done);
    printf("execute %.3f ms\n", 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
  }
  std::vector<float> ae(N), g(E * 3);
  for (int k = 0; k < 2; ++k) {
    PJRT_Buffer_ToHostBuffer_Args th{}; th.struct_size = PJRT_Buffer_ToHostBuffer_Args_STRUCT_SIZE; th.src = outs[k];
    th.dst = k ? (void *)g.data() : (void *)ae.data(); th.dst_size = (k ? g.size() : ae.size()) * sizeof(float);
    check(api->PJRT_Buffer_ToHostBuffer(&th), "to host"); await(th.event);
  }
  std::string rae = slurp(dir + "/ref_ae.bin"), rg = slurp(dir + "/ref_g.bin");
  double dae = 0, dg = 0;
  for (long i = 0; i < N; ++i) dae = std::max(dae, (double)std::fabs(ae[i] - ((float *)rae.data())[i]));
  for (long i = 0; i < 3 * E; ++i) dg = std::max(dg, (double)std::fabs(g[i] - ((float *)rg.data())[i]));
  printf("max |diff| vs jax: atom energies %.3g, dE/dedge %.3g\n", dae, dg);
  return 0;
}
