use std::env;
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
use rustorium_sdk::{WebSocketClient, Event};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<()> {
    let client = WebSocketClient::new()
        .with_endpoint("ws://localhost:9072/ws")
        .with_api_key(env::var("RUSTORIUM_API_KEY")?)
        .build()?;
        
    // Subscribe to events
    let mut events = client.subscribe_events(&["blocks", "transactions"]).await?;
    
    while let Some(event) = events.next().await {
        match event {
            Event::NewBlock(block) => {
                println!("New block: {}", block.number);
            }
            Event::TransactionConfirmed(tx) => {
                println!("Transaction confirmed: {}", tx.hash);
            }
            Event::StateUpdate(update) => {
                println!("State updated: {:?}", update);
            }
            Event::Error(error) => {
                eprintln!("Error: {}", error);
            }
        }
    }
    
    Ok(())
}
