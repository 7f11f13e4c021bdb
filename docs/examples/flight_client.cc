// A cogflight client in C++ with Arrow Flight: plan a query, read every endpoint,
// and report the chips received. Wire contract: docs/wire-contract.md.
//
// Build against any Arrow C++ with Flight (for example the one inside a pyarrow wheel):
//   g++ -std=c++20 flight_client.cc -I"$(python -c 'import pyarrow; print(pyarrow.get_include())')" \
//       -L"$LIB" -l:libarrow_flight.so.2600 -l:libarrow.so.2600 -Wl,-rpath,"$LIB" -o flight_client
// Run:
//   ./flight_client grpc://127.0.0.1:8815 '{"v": 1, "collection": "demo", ...}'

#include <arrow/api.h>
#include <arrow/flight/api.h>

#include <iostream>
#include <memory>
#include <string>

namespace flight = arrow::flight;

arrow::Status Run(const std::string& uri, const std::string& query) {
  ARROW_ASSIGN_OR_RAISE(auto location, flight::Location::Parse(uri));
  ARROW_ASSIGN_OR_RAISE(auto client, flight::FlightClient::Connect(location));

  // 1. Plan: a command descriptor holding the query returns one endpoint per shard.
  auto descriptor = flight::FlightDescriptor::Command(query);
  ARROW_ASSIGN_OR_RAISE(auto info, client->GetFlightInfo(descriptor));
  arrow::ipc::DictionaryMemo memo;
  ARROW_ASSIGN_OR_RAISE(auto schema, info->GetSchema(&memo));
  auto chip = schema->GetFieldByName("chip");
  if (chip == nullptr) return arrow::Status::Invalid("no 'chip' column in ", schema->ToString());
  std::cout << "chip type: " << chip->type()->ToString() << "\n";
  std::cout << "endpoints: " << info->endpoints().size() << ", chips planned: "
            << info->total_records() << "\n";

  // 2. Read every endpoint (at its advertised location when there is one).
  int64_t chips = 0;
  int64_t first_sum = -1;
  for (const auto& endpoint : info->endpoints()) {
    std::unique_ptr<flight::FlightClient> other;
    flight::FlightClient* reader_client = client.get();
    if (!endpoint.locations.empty()) {
      ARROW_ASSIGN_OR_RAISE(other, flight::FlightClient::Connect(endpoint.locations[0]));
      reader_client = other.get();
    }
    ARROW_ASSIGN_OR_RAISE(auto stream, reader_client->DoGet(endpoint.ticket));
    ARROW_ASSIGN_OR_RAISE(auto table, stream->ToTable());
    chips += table->num_rows();
    if (first_sum < 0 && table->num_rows() > 0) {
      // The chip column is a fixed_shape_tensor: storage is a fixed-size list of pixels.
      auto column = table->GetColumnByName("chip")->chunk(0);
      auto ext = std::static_pointer_cast<arrow::ExtensionArray>(column);
      auto list = std::static_pointer_cast<arrow::FixedSizeListArray>(ext->storage());
      auto pixels = std::static_pointer_cast<arrow::UInt16Array>(list->value_slice(0));
      first_sum = 0;
      for (int64_t i = 0; i < pixels->length(); ++i) first_sum += pixels->Value(i);
    }
  }
  std::cout << "chips received: " << chips << "\n";
  std::cout << "first chip pixel sum: " << first_sum << "\n";
  return arrow::Status::OK();
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " LOCATION QUERY_JSON\n";
    return 2;
  }
  arrow::Status status = Run(argv[1], argv[2]);
  if (!status.ok()) {
    std::cerr << "error: " << status.ToString() << "\n";
    return 1;
  }
  return 0;
}
