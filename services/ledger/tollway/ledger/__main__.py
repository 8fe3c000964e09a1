from tollway.ledger.app import main

main()
