use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct Transfer {
    #[event(aggregate_id)]
    from: String,
    #[event(aggregate_id)]
    to: String,
}

fn main() {}
